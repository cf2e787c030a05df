// Our own copy of the fscrypt UAPI (include/uapi/linux/fscrypt.h).
//
// Debian 12's libc headers lag the kernel (no log2_data_unit_size, no add-key
// flags), so the addon declares the structures itself. Offsets and sizes are
// pinned by static_asserts against the kernel's documented layout.
#ifndef FSCRYPT_LOCAL_UAPI_H
#define FSCRYPT_LOCAL_UAPI_H

#include <cstddef>
#include <cstdint>

namespace fscrypt_uapi {

// The _IOR/_IOW direction bits of these numbers are historically swapped in
// the kernel header, so the numbers are written out rather than rebuilt.
constexpr unsigned long kSetPolicy = 0x800c6613;
constexpr unsigned long kGetPolicy = 0x400c6615;
constexpr unsigned long kGetPolicyEx = 0xc0096616;
constexpr unsigned long kAddKey = 0xc0506617;
constexpr unsigned long kRemoveKey = 0xc0406618;
constexpr unsigned long kRemoveKeyAllUsers = 0xc0406619;
constexpr unsigned long kGetKeyStatus = 0xc080661a;
constexpr unsigned long kGetNonce = 0x8010661b;

constexpr std::size_t kDescriptorSize = 8;
constexpr std::size_t kIdentifierSize = 16;
constexpr std::size_t kMinKeySize = 16;
constexpr std::size_t kMaxKeySize = 64;
constexpr std::size_t kNonceSize = 16;

constexpr uint32_t kSpecTypeDescriptor = 1;
constexpr uint32_t kSpecTypeIdentifier = 2;

struct PolicyV1 {
  uint8_t version;
  uint8_t contents_encryption_mode;
  uint8_t filenames_encryption_mode;
  uint8_t flags;
  uint8_t master_key_descriptor[kDescriptorSize];
};

struct PolicyV2 {
  uint8_t version;
  uint8_t contents_encryption_mode;
  uint8_t filenames_encryption_mode;
  uint8_t flags;
  uint8_t log2_data_unit_size;
  uint8_t reserved[3];
  uint8_t master_key_identifier[kIdentifierSize];
};

struct GetPolicyExArg {
  uint64_t policy_size;  // in: size of the buffer; out: size of the policy
  union {
    uint8_t version;
    PolicyV1 v1;
    PolicyV2 v2;
  } policy;
};

struct KeySpecifier {
  uint32_t type;
  uint32_t reserved;
  union {
    uint8_t reserved[32];
    uint8_t descriptor[kDescriptorSize];
    uint8_t identifier[kIdentifierSize];
  } u;
};

struct AddKeyArg {
  KeySpecifier key_spec;
  uint32_t raw_size;
  uint32_t key_id;
  uint32_t flags;
  uint32_t reserved[7];
  // Followed by raw[raw_size] in the kernel's variable-length layout.
};

// AddKeyArg with room for the largest raw key, laid out as the kernel reads it.
struct AddKeyBuffer {
  AddKeyArg arg;
  uint8_t raw[kMaxKeySize];
};

struct RemoveKeyArg {
  KeySpecifier key_spec;
  uint32_t removal_status_flags;
  uint32_t reserved[5];
};

struct KeyStatusArg {
  KeySpecifier key_spec;
  uint32_t reserved[6];
  uint32_t status;
  uint32_t status_flags;
  uint32_t user_count;
  uint32_t out_reserved[13];
};

static_assert(sizeof(PolicyV1) == 12, "fscrypt_policy_v1 is 12 bytes");
static_assert(sizeof(PolicyV2) == 24, "fscrypt_policy_v2 is 24 bytes");
static_assert(sizeof(GetPolicyExArg) == 32, "get_policy_ex_arg is 32 bytes");
static_assert(sizeof(KeySpecifier) == 40, "fscrypt_key_specifier is 40 bytes");
static_assert(sizeof(AddKeyArg) == 80, "add_key_arg header is 80 bytes");
static_assert(offsetof(AddKeyBuffer, raw) == 80, "raw key follows the header");
static_assert(offsetof(AddKeyArg, key_id) == 44, "key_id at offset 44");
static_assert(sizeof(RemoveKeyArg) == 64, "remove_key_arg is 64 bytes");
static_assert(offsetof(KeyStatusArg, status) == 64, "status at offset 64");
static_assert(offsetof(KeyStatusArg, user_count) == 72, "user_count at 72");
static_assert(sizeof(KeyStatusArg) == 128, "get_key_status_arg is 128 bytes");

}  // namespace fscrypt_uapi

#endif  // FSCRYPT_LOCAL_UAPI_H
