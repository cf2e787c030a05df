// fscrypt-local: the package root.
export * from './kernel/index.js';
export * from './keys/index.js';
export * from './volume/index.js';
