{
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
        }]
      ]
    }
  ]
}
