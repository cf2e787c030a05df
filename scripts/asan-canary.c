/*
 * A Node-API addon with one deliberate heap-buffer-overflow, for
 * scripts/asan-test.sh only (never built by npm, never shipped): loaded
 * into node exactly as the ASan build of the real addon is (same flags,
 * same preloaded runtime), it must make AddressSanitizer report and abort.
 * If it does not, the setup is blind and a clean run of the tests proves
 * nothing.
 */
#include <stdlib.h>
#include <node_api.h>

static napi_value overflow(napi_env env, napi_callback_info info) {
  (void)info;
  /* volatile: the compiler must neither fold nor drop the bad write */
  volatile char *block = malloc(16);
  volatile size_t index = 16;
  block[index] = 1; /* one byte past the end */
  free((void *)block);
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "overflow", NAPI_AUTO_LENGTH, overflow, NULL, &fn);
  napi_set_named_property(env, exports, "overflow", fn);
  return exports;
}
