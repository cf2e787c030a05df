// Our own copy of the fscrypt UAPI (include/uapi/linux/fscrypt.h).
//
// Debian 12's libc headers lag the kernel (no log2_data_unit_size, no add-key
// flags), so the addon declares the structures itself. Offsets and sizes are
// pinned by static_asserts against the kernel's documented layout, and the
// ioctl numbers are computed from these structs with the kernel's macros.
#ifndef FSCRYPT_LOCAL_UAPI_H
#define FSCRYPT_LOCAL_UAPI_H

#if !defined(__linux__)
#error "fscrypt-local builds only on Linux: fscrypt is a Linux kernel interface"
#endif
#if !__has_include(<linux/ioctl.h>)
#error "fscrypt-local needs the Linux UAPI headers to compute the fscrypt ioctl numbers (<linux/ioctl.h> is missing): install linux-libc-dev (Debian, Ubuntu), kernel-headers (Fedora, RHEL) or linux-headers (Alpine), then rebuild"
#endif

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace fscrypt_uapi {

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

// ioctl numbers, built exactly as include/uapi/linux/fscrypt.h builds them:
// the same _IOR/_IOW/_IOWR macro, type 'f', number and argument size. The
// macros come from <linux/ioctl.h>, i.e. the architecture's <asm/ioctl.h>,
// which is where the encoding differs (asm-generic on x86-64 and arm64;
// powerpc, mips, sparc and alpha have their own direction bits and widths),
// so a number computed here is the one the running kernel was compiled with.
//
// The kernel header's directions look swapped: SET_ENCRYPTION_POLICY, which
// passes the policy *to* the kernel, is _IOR, and GET_ENCRYPTION_POLICY is
// _IOW. That is a historical mistake frozen into the ABI; the kernel
// dispatches on the number its own header produces, so we use the same macro
// as the header for every ioctl, never the "correct" direction (which would
// be a different number and fail with ENOTTY).
constexpr unsigned long kSetPolicy = _IOR('f', 19, PolicyV1);
constexpr unsigned long kGetPolicy = _IOW('f', 21, PolicyV1);
// The header sizes this one as __u8[9] (the u64 policy_size plus the version
// byte), not as the whole argument, so the number does not change when a new
// policy version grows the union.
constexpr unsigned long kGetPolicyEx = _IOWR('f', 22, uint8_t[9]);
constexpr unsigned long kAddKey = _IOWR('f', 23, AddKeyArg);
constexpr unsigned long kRemoveKey = _IOWR('f', 24, RemoveKeyArg);
constexpr unsigned long kRemoveKeyAllUsers = _IOWR('f', 25, RemoveKeyArg);
constexpr unsigned long kGetKeyStatus = _IOWR('f', 26, KeyStatusArg);
constexpr unsigned long kGetNonce = _IOR('f', 27, uint8_t[kNonceSize]);

// The known numbers on x86-64 and arm64 (both use the asm-generic encoding):
// a check that the structs above have the kernel's sizes and that each macro
// is the one the kernel header uses. Elsewhere the numbers differ, e.g. on
// powerpc SET_ENCRYPTION_POLICY is 0x400c6613, and come from that
// architecture's macros; test/kernel/uapi.test.ts compiles this header
// against powerpc's encoding to show that they do.
#if defined(__x86_64__) || defined(__aarch64__)
static_assert(kSetPolicy == 0x800c6613, "FS_IOC_SET_ENCRYPTION_POLICY is 0x800c6613 on x86-64 and arm64");
static_assert(kGetPolicy == 0x400c6615, "FS_IOC_GET_ENCRYPTION_POLICY is 0x400c6615 on x86-64 and arm64");
static_assert(kGetPolicyEx == 0xc0096616, "FS_IOC_GET_ENCRYPTION_POLICY_EX is 0xc0096616 on x86-64 and arm64");
static_assert(kAddKey == 0xc0506617, "FS_IOC_ADD_ENCRYPTION_KEY is 0xc0506617 on x86-64 and arm64");
static_assert(kRemoveKey == 0xc0406618, "FS_IOC_REMOVE_ENCRYPTION_KEY is 0xc0406618 on x86-64 and arm64");
static_assert(kRemoveKeyAllUsers == 0xc0406619, "FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS is 0xc0406619 on x86-64 and arm64");
static_assert(kGetKeyStatus == 0xc080661a, "FS_IOC_GET_ENCRYPTION_KEY_STATUS is 0xc080661a on x86-64 and arm64");
static_assert(kGetNonce == 0x8010661b, "FS_IOC_GET_ENCRYPTION_NONCE is 0x8010661b on x86-64 and arm64");
#endif

}  // namespace fscrypt_uapi

#endif  // FSCRYPT_LOCAL_UAPI_H
