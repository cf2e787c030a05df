// fscrypt-local: the package root.
export * from './kernel/index.js';
