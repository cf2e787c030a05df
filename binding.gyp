{
  # fscrypt_local_asan=1 instruments the addon with AddressSanitizer.
  # scripts/asan-test.sh passes it (-Dfscrypt_local_asan=1) to a build in a
  # directory of its own; the default build, build/Release, is the
  # production addon and is never instrumented. (Not plain "asan": node's
  # own config.gypi, which node-gyp includes, already defines that one.)
  "variables": {
    "fscrypt_local_asan%": 0
  },
  "targets": [
    {
      "target_name": "fscrypt_local",
      "sources": ["native/addon.cc"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "conditions": [
        ["OS=='linux'", {
          "cflags_cc": [
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-fvisibility=hidden",
            "-fstack-protector-strong",
            "-D_FORTIFY_SOURCE=2"
          ],
          "ldflags": ["-Wl,-z,relro,-z,now"]
        }],
        ["OS=='linux' and fscrypt_local_asan==1", {
          # -U_FORTIFY_SOURCE: the fortified libc wrappers check bounds
          # themselves and abort with a bare message; ASan's own checks give
          # the report with the stack. -g and frame pointers for that stack.
          "cflags_cc": [
            "-fsanitize=address",
            "-fno-omit-frame-pointer",
            "-g",
            "-U_FORTIFY_SOURCE"
          ],
          "ldflags": ["-fsanitize=address"]
        }]
      ]
    }
  ]
}
