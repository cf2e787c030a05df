// The process-wide collector that deletes retired generations in the
// background (see tree-remover-trash.ts). One per process: deletions of
// different slots queue behind each other rather than compete for the disk.
import { TrashCollector } from './tree-remover-trash.js';

let collector: TrashCollector | undefined;

export function defaultTrash(): TrashCollector {
  collector ??= new TrashCollector();
  return collector;
}
