// fscrypt ioctls for Node.js: one thin, asynchronous wrapper per ioctl family.
//
// Every exported function copies its arguments on the JS thread, issues one
// open() + ioctl() on the libuv thread pool (AsyncWorker), and settles a
// promise. There are no policy decisions and no file formats here: the typed
// layer in lib/kernel validates input, names modes and explains errors. The
// addon still checks what it converts (types, each number against the range
// of the kernel field it fills, NUL bytes in paths) and throws a TypeError or
// RangeError naming the argument, because a silently narrowed value would be
// a different request to the kernel, and the addon cannot assume its caller.
//
// Failures reject with an instance of the FscryptError class that the JS side
// registers through setErrorClass() (the better-sqlite3 pattern), constructed
// as `new FscryptError(undefined, { errno, syscall, ioctl, path })` so the
// message and code are composed in one place, in TypeScript. Every promise
// settles: if building that error or a result throws, the promise rejects
// with what was thrown.
//
// Synchronous exceptions: prctl(PR_SET_DUMPABLE) (instant, process-wide),
// and flock(LOCK_NB) for the slot lock, which never
// blocks and so needs no worker. Node has no flock, and a lock the kernel
// drops when its holder dies is the only kind a crash cannot wedge and that
// works across PID namespaces (the agent's container and an admin's shell).
//
// Key bytes are copied into worker-owned native memory and wiped with
// explicit_bzero right after the ioctl, and again in the destructor so that
// no path (success, failure, or a worker that never ran) leaves them behind.

#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>

#include <napi.h>

#include "fscrypt_uapi.h"

// lib/volume opens names with O_PATH (no ENOKEY on a locked file, no blocking
// on a FIFO), and its value differs between architectures, so the addon
// exports the C library's value instead of lib hard-coding one. Without it
// (Linux < 2.6.39 headers) that code cannot work: fail the build, not a call.
#ifndef O_PATH
#error "fscrypt-local needs O_PATH from <fcntl.h> (Linux 2.6.39 or later, glibc 2.14 or later)"
#endif

namespace {

namespace uapi = fscrypt_uapi;

// Per-environment state (one per worker thread / context that loads us).
struct AddonData {
  Napi::FunctionReference error_class;
};

Napi::Value MakeSystemError(Napi::Env env, int err, const char* syscall,
                            const char* ioctl_name, const std::string& path) {
  Napi::Object props = Napi::Object::New(env);
  props.Set("errno", Napi::Number::New(env, -err));  // negative, as in Node
  props.Set("syscall", Napi::String::New(env, syscall));
  if (ioctl_name != nullptr) {
    props.Set("ioctl", Napi::String::New(env, ioctl_name));
  }
  props.Set("path", Napi::String::New(env, path));

  AddonData* data = env.GetInstanceData<AddonData>();
  if (data != nullptr && !data->error_class.IsEmpty()) {
    return data->error_class.New({env.Undefined(), props});
  }
  // Only reachable if the binding is used without lib/kernel; keep the facts.
  Napi::Error error = Napi::Error::New(
      env, std::string(syscall) + " failed: " + std::strerror(err) + ", '" +
               path + "'");
  error.Value().Set("errno", props.Get("errno"));
  error.Value().Set("syscall", props.Get("syscall"));
  error.Value().Set("path", props.Get("path"));
  return error.Value();
}

// ioctl() that retries on EINTR and returns 0 or the errno.
int IoctlErrno(int fd, unsigned long request, void* arg) {
  for (;;) {
    if (ioctl(fd, request, arg) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// Copies a Buffer/Uint8Array argument of min..max bytes into `out`.
std::size_t CopyBytes(const Napi::Value& value, std::size_t min,
                      std::size_t max, uint8_t* out, const char* what) {
  if (!value.IsTypedArray() ||
      value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(value.Env(),
                               std::string(what) + " must be a Uint8Array");
  }
  Napi::Uint8Array bytes = value.As<Napi::Uint8Array>();
  std::size_t size = bytes.ByteLength();
  if (size < min || size > max) {
    std::string expected = min == max ? std::to_string(min)
                                      : std::to_string(min) + " to " +
                                            std::to_string(max);
    throw Napi::RangeError::New(value.Env(), std::string(what) + " must be " +
                                                 expected + " bytes, got " +
                                                 std::to_string(size));
  }
  std::memcpy(out, bytes.Data(), size);
  return size;
}

std::string PathArg(const Napi::CallbackInfo& info, std::size_t index) {
  if (info.Length() <= index || !info[index].IsString()) {
    throw Napi::TypeError::New(info.Env(), "path must be a string");
  }
  std::string path = info[index].As<Napi::String>().Utf8Value();
  // open() would stop at the NUL and open a different (shorter) path.
  if (path.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(info.Env(), "path must not contain a NUL byte");
  }
  return path;
}

// An integer argument in [min, max]. JS numbers are doubles and the kernel's
// fields are u8 or u32: Napi's Uint32Value() would wrap silently (257 becomes
// mode 1, 2**32 + 2 becomes version 2, -1 becomes 0xffffffff, 1.5 becomes 1)
// and send the kernel a request the caller never made. lib/kernel validates
// first; the addon does not rely on it.
int64_t IntegerArg(const Napi::CallbackInfo& info, std::size_t index,
                   const char* what, int64_t min, int64_t max) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) +
                                               " must be a number");
  }
  const double value = info[index].As<Napi::Number>().DoubleValue();
  // NaN fails both comparisons; trunc() catches fractions.
  if (!(value >= static_cast<double>(min) &&
        value <= static_cast<double>(max)) ||
      std::trunc(value) != value) {
    throw Napi::RangeError::New(
        info.Env(), std::string(what) + " must be an integer from " +
                        std::to_string(min) + " to " + std::to_string(max) +
                        ", got " + info[index].ToString().Utf8Value());
  }
  return static_cast<int64_t>(value);
}

// A u8 field of a policy.
uint8_t ByteArg(const Napi::CallbackInfo& info, std::size_t index,
                const char* what) {
  return static_cast<uint8_t>(IntegerArg(info, index, what, 0, UINT8_MAX));
}

bool BoolArg(const Napi::CallbackInfo& info, std::size_t index,
             const char* what) {
  if (info.Length() <= index || !info[index].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) +
                                               " must be a boolean");
  }
  return info[index].As<Napi::Boolean>().Value();
}

// Fills a key specifier from (type, bytes). For an identifier that the kernel
// will fill in (ADD_KEY of a v2 key), `bytes` is undefined.
void FillKeySpecifier(const Napi::CallbackInfo& info, std::size_t type_index,
                      uapi::KeySpecifier* spec) {
  std::memset(spec, 0, sizeof(*spec));
  spec->type = static_cast<uint32_t>(
      IntegerArg(info, type_index, "key specifier type", 0, UINT32_MAX));
  Napi::Value bytes = info[type_index + 1];
  if (spec->type == uapi::kSpecTypeDescriptor) {
    CopyBytes(bytes, uapi::kDescriptorSize, uapi::kDescriptorSize,
              spec->u.descriptor, "key descriptor");
  } else if (spec->type == uapi::kSpecTypeIdentifier) {
    if (!bytes.IsUndefined()) {
      CopyBytes(bytes, uapi::kIdentifierSize, uapi::kIdentifierSize,
                spec->u.identifier, "key identifier");
    }
  } else {
    throw Napi::RangeError::New(
        info.Env(), "key specifier type must be 1 (descriptor) or 2 "
                    "(identifier), got " + std::to_string(spec->type));
  }
}

Napi::Buffer<uint8_t> KeySpecifierBytes(Napi::Env env,
                                        const uapi::KeySpecifier& spec) {
  std::size_t size = spec.type == uapi::kSpecTypeDescriptor
                         ? uapi::kDescriptorSize
                         : uapi::kIdentifierSize;
  return Napi::Buffer<uint8_t>::Copy(env, spec.u.reserved, size);
}

// Base of every operation: open the path, run one ioctl family, settle.
class FscryptWorker : public Napi::AsyncWorker {
 public:
  // The deferred is made here, once the constructor has accepted every
  // argument: one made earlier would, on a bad argument, be a promise that
  // nobody holds and that never settles, pinned by its handle forever.
  Napi::Promise Promise() {
    deferred_.emplace(Napi::Promise::Deferred::New(Env()));
    return deferred_->Promise();
  }

 protected:
  FscryptWorker(Napi::Env env, std::string path, const char* ioctl_name,
                int extra_open_flags = 0)
      : Napi::AsyncWorker(env, "fscrypt-local"),
        path_(std::move(path)),
        ioctl_name_(ioctl_name),
        open_flags_(O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                    extra_open_flags) {}

  // Runs on the thread pool with `fd` open on the path. Returns 0 or errno.
  virtual int Run(int fd) = 0;
  // Builds the resolved value on the JS thread after Run returned 0.
  virtual Napi::Value Result(Napi::Env env) = 0;

  // Lets Run() report which ioctl of a family failed (e.g. a fallback).
  void SetIoctlName(const char* name) { ioctl_name_ = name; }
  // Lets Run() report a failure of a system call other than ioctl().
  void SetSyscall(const char* name) { syscall_ = name; }

 private:
  void Execute() override {
    int fd = open(path_.c_str(), open_flags_);
    if (fd < 0) {
      errno_ = errno;
      syscall_ = "open";
      // O_NOFOLLOW refuses a symlink with ELOOP, except with O_DIRECTORY,
      // where the kernel's type check comes first and says ENOTDIR. Report
      // the refused link as ELOOP in both cases, so "not followed" has one
      // answer; a real non-directory (or an intermediate non-directory, for
      // which lstat fails) keeps ENOTDIR. Only the errno depends on this
      // lstat: the open itself never followed the link.
      struct stat st;
      if (errno_ == ENOTDIR && (open_flags_ & O_NOFOLLOW) != 0 &&
          (open_flags_ & O_DIRECTORY) != 0 && lstat(path_.c_str(), &st) == 0 &&
          S_ISLNK(st.st_mode)) {
        errno_ = ELOOP;
      }
      return;
    }
    errno_ = Run(fd);
    close(fd);
  }

  // Settles the promise in every case. Building the value runs JS: the
  // registered error class's constructor, and property sets that reach
  // setters on Object.prototype. If that throws, node-addon-api turns the
  // exception into a C++ Napi::Error; escaping OnOK it would become an
  // uncaught exception and the promise would stay pending forever. So the
  // exception (or, failing that, a fallback error) becomes the rejection,
  // as better-sqlite3 does with its pending exceptions.
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    bool resolve = errno_ == 0;
    Napi::Value value;
    try {
      value = resolve ? Result(env)
                      : MakeSystemError(env, errno_, syscall_,
                                        std::strcmp(syscall_, "ioctl") == 0
                                            ? ioctl_name_
                                            : nullptr,
                                        path_);
    } catch (const Napi::Error& thrown) {
      resolve = false;
      value = thrown.Value();  // what JS threw, primitives included
    } catch (const std::exception&) {
      resolve = false;  // e.g. std::bad_alloc building a message
    }
    Settle(env, resolve, value);
  }

  // Only reached when Execute() threw a C++ exception (node-addon-api calls
  // SetError with its what()); guarded like OnOK.
  void OnError(const Napi::Error& error) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Value value;
    try {
      value = error.Value();
    } catch (const Napi::Error& thrown) {
      value = thrown.Value();
    }
    Settle(env, false, value);
  }

  void Settle(Napi::Env env, bool resolve, Napi::Value value) {
    // An exception left pending without a C++ throw is still a failure, and
    // would otherwise be reported as uncaught after this callback returns.
    if (env.IsExceptionPending()) {
      Napi::Error pending = env.GetAndClearPendingException();
      if (resolve || value.IsEmpty()) value = pending.Value();
      resolve = false;
    }
    if (value.IsEmpty()) {
      resolve = false;
      value = FallbackError(env);
    }
    if (!deferred_) return;  // Start() always calls Promise() first
    if (resolve) {
      deferred_->Resolve(value);
    } else {
      deferred_->Reject(value);
    }
  }

  // A plain Error with the facts, built without running any user JS.
  Napi::Value FallbackError(Napi::Env env) {
    std::string message = "fscrypt-local: building the result of ";
    message += ioctl_name_;
    message += " on '" + path_ + "' failed";
    if (errno_ != 0) {
      message += std::string(" (") + syscall_ + ": " + std::strerror(errno_) + ")";
    }
    return Napi::Error::New(env, message).Value();
  }

  std::optional<Napi::Promise::Deferred> deferred_;
  std::string path_;
  const char* ioctl_name_;
  int open_flags_;
  int errno_ = 0;
  const char* syscall_ = "ioctl";
};

// O_NOFOLLOW when the caller asked not to follow a symlink in the last
// component (lib/volume, where a tenant may swap a directory for a link
// between a check and the call). Intermediate components are still followed.
int NoFollowFlag(const Napi::CallbackInfo& info, std::size_t index) {
  return BoolArg(info, index, "noFollow") ? O_NOFOLLOW : 0;
}

// setPolicy(dir, version, contents, filenames, flags, log2DataUnitSize, key,
// noFollow). version is the kernel's byte: 0 for v1 (8-byte descriptor), 2
// for v2 (16-byte identifier).
class SetPolicyWorker : public FscryptWorker {
 public:
  SetPolicyWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_SET_ENCRYPTION_POLICY",
                      O_DIRECTORY | NoFollowFlag(info, 7)) {
    std::memset(&policy_, 0, sizeof(policy_));
    const uint8_t version = ByteArg(info, 1, "policy version");
    const uint8_t contents = ByteArg(info, 2, "contents mode");
    const uint8_t filenames = ByteArg(info, 3, "filenames mode");
    const uint8_t flags = ByteArg(info, 4, "policy flags");
    if (version == 0) {
      policy_.v1 = {0, contents, filenames, flags, {}};
      CopyBytes(info[6], uapi::kDescriptorSize, uapi::kDescriptorSize,
                policy_.v1.master_key_descriptor, "key descriptor");
    } else if (version == 2) {
      policy_.v2.version = 2;
      policy_.v2.contents_encryption_mode = contents;
      policy_.v2.filenames_encryption_mode = filenames;
      policy_.v2.flags = flags;
      policy_.v2.log2_data_unit_size =
          ByteArg(info, 5, "log2 data unit size");
      CopyBytes(info[6], uapi::kIdentifierSize, uapi::kIdentifierSize,
                policy_.v2.master_key_identifier, "key identifier");
    } else {
      throw Napi::RangeError::New(
          info.Env(), "policy version must be 0 (v1) or 2 (v2), got " +
                          std::to_string(version));
    }
  }

 private:
  // The ioctl number encodes the v1 size; the kernel dispatches on byte 0.
  int Run(int fd) override { return IoctlErrno(fd, uapi::kSetPolicy, &policy_); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

  union {
    uapi::PolicyV1 v1;
    uapi::PolicyV2 v2;
  } policy_;
};

// getPolicy(path, noFollow) -> { version, contents, filenames, flags,
// log2DataUnitSize, key }. Falls back to the v1-only ioctl on kernels without
// GET_POLICY_EX.
class GetPolicyWorker : public FscryptWorker {
 public:
  GetPolicyWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_GET_ENCRYPTION_POLICY_EX", NoFollowFlag(info, 1)) {
    std::memset(&arg_, 0, sizeof(arg_));
  }

 private:
  int Run(int fd) override {
    arg_.policy_size = sizeof(arg_.policy);
    int err = IoctlErrno(fd, uapi::kGetPolicyEx, &arg_);
    if (err != ENOTTY) return err;
    // Pre-5.4 kernel: only v1 policies exist there.
    SetIoctlName("FS_IOC_GET_ENCRYPTION_POLICY");
    std::memset(&arg_, 0, sizeof(arg_));
    err = IoctlErrno(fd, uapi::kGetPolicy, &arg_.policy.v1);
    if (err == 0) arg_.policy_size = sizeof(uapi::PolicyV1);
    return err;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    const uint8_t version = arg_.policy.version;
    out.Set("version", version);
    if (version == 2) {
      const uapi::PolicyV2& p = arg_.policy.v2;
      out.Set("contents", p.contents_encryption_mode);
      out.Set("filenames", p.filenames_encryption_mode);
      out.Set("flags", p.flags);
      out.Set("log2DataUnitSize", p.log2_data_unit_size);
      out.Set("key", Napi::Buffer<uint8_t>::Copy(env, p.master_key_identifier,
                                                 uapi::kIdentifierSize));
    } else {
      const uapi::PolicyV1& p = arg_.policy.v1;
      out.Set("contents", p.contents_encryption_mode);
      out.Set("filenames", p.filenames_encryption_mode);
      out.Set("flags", p.flags);
      out.Set("log2DataUnitSize", 0);
      out.Set("key", Napi::Buffer<uint8_t>::Copy(env, p.master_key_descriptor,
                                                 uapi::kDescriptorSize));
    }
    return out;
  }

  uapi::GetPolicyExArg arg_;
};

// addKey(mountpoint, specType, specBytes | undefined, raw | null, keyId)
// -> Buffer (the identifier the kernel computed, or the descriptor given).
class AddKeyWorker : public FscryptWorker {
 public:
  AddKeyWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_ADD_ENCRYPTION_KEY") {
    std::memset(&buffer_, 0, sizeof(buffer_));
    FillKeySpecifier(info, 1, &buffer_.arg.key_spec);
    if (info[3].IsNull() || info[3].IsUndefined()) {
      // A key serial number (key_serial_t, a positive int32). The kernel
      // field is u32 but is looked up as a key_serial_t, so 2**32 - 4 would
      // name the special keyring -4 (the user keyring): refuse the wrap.
      buffer_.arg.key_id =
          static_cast<uint32_t>(IntegerArg(info, 4, "key_id", 1, INT32_MAX));
    } else {
      buffer_.arg.raw_size =
          static_cast<uint32_t>(CopyBytes(info[3], uapi::kMinKeySize,
                                          uapi::kMaxKeySize, buffer_.raw, "key"));
    }
  }

  ~AddKeyWorker() override { explicit_bzero(&buffer_, sizeof(buffer_)); }

 private:
  int Run(int fd) override {
    int err = IoctlErrno(fd, uapi::kAddKey, &buffer_);
    // The secret is no longer needed once the kernel has (or has not) it.
    explicit_bzero(buffer_.raw, sizeof(buffer_.raw));
    return err;
  }

  Napi::Value Result(Napi::Env env) override {
    return KeySpecifierBytes(env, buffer_.arg.key_spec);
  }

  uapi::AddKeyBuffer buffer_;
};

// removeKey(mountpoint, specType, specBytes, allUsers) -> removal status flags
class RemoveKeyWorker : public FscryptWorker {
 public:
  RemoveKeyWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_REMOVE_ENCRYPTION_KEY") {
    std::memset(&arg_, 0, sizeof(arg_));
    FillKeySpecifier(info, 1, &arg_.key_spec);
    all_users_ = BoolArg(info, 3, "allUsers");
    if (all_users_) SetIoctlName("FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS");
  }

 private:
  int Run(int fd) override {
    return IoctlErrno(
        fd, all_users_ ? uapi::kRemoveKeyAllUsers : uapi::kRemoveKey, &arg_);
  }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Number::New(env, arg_.removal_status_flags);
  }

  uapi::RemoveKeyArg arg_;
  bool all_users_ = false;
};

// getKeyStatus(mountpoint, specType, specBytes)
// -> { status, statusFlags, userCount }
class KeyStatusWorker : public FscryptWorker {
 public:
  KeyStatusWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_GET_ENCRYPTION_KEY_STATUS") {
    std::memset(&arg_, 0, sizeof(arg_));
    FillKeySpecifier(info, 1, &arg_.key_spec);
  }

 private:
  int Run(int fd) override { return IoctlErrno(fd, uapi::kGetKeyStatus, &arg_); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("status", arg_.status);
    out.Set("statusFlags", arg_.status_flags);
    out.Set("userCount", arg_.user_count);
    return out;
  }

  uapi::KeyStatusArg arg_;
};

// getNonce(path, noFollow) -> Buffer(16)
class NonceWorker : public FscryptWorker {
 public:
  NonceWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_GET_ENCRYPTION_NONCE", NoFollowFlag(info, 1)) {
    std::memset(nonce_, 0, sizeof(nonce_));
  }

 private:
  int Run(int fd) override { return IoctlErrno(fd, uapi::kGetNonce, nonce_); }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Buffer<uint8_t>::Copy(env, nonce_, sizeof(nonce_));
  }

  uint8_t nonce_[uapi::kNonceSize];
};

// probe(path) -> { addKeyErrno, fsType }
// ADD_ENCRYPTION_KEY with a NULL argument never touches a key: the errno says
// whether the filesystem supports fscrypt (EFAULT), lacks the feature
// (EOPNOTSUPP) or cannot do it at all (ENOTTY). The answer is data, not an
// error, so only open()/fstatfs() failures reject.
class ProbeWorker : public FscryptWorker {
 public:
  ProbeWorker(const Napi::CallbackInfo& info)
      : FscryptWorker(info.Env(), PathArg(info, 0),
                      "FS_IOC_ADD_ENCRYPTION_KEY") {}

 private:
  int Run(int fd) override {
    struct statfs st;
    if (fstatfs(fd, &st) != 0) {
      SetSyscall("fstatfs");
      return errno;
    }
    // f_type is a signed word; magic numbers are unsigned 32-bit values, so
    // go through the unsigned type of the same width: on 32-bit systems
    // f2fs's 0xf2f52010 would otherwise sign-extend into a 64-bit number.
    fs_type_ = static_cast<std::make_unsigned_t<decltype(st.f_type)>>(st.f_type);
    add_key_errno_ = IoctlErrno(fd, uapi::kAddKey, nullptr);
    return 0;
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("addKeyErrno", Napi::Number::New(env, -add_key_errno_));
    out.Set("fsType", Napi::Number::New(env, static_cast<double>(fs_type_)));
    return out;
  }

  uint64_t fs_type_ = 0;
  int add_key_errno_ = 0;
};

template <typename Worker>
Napi::Value Start(const Napi::CallbackInfo& info) {
  auto* worker = new Worker(info);  // deleted by node-addon-api when done
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// flock(fd, operation) -> 0 or a negative errno. Only LOCK_NB operations
// are accepted, so the call can never block the event loop.
Napi::Value Flock(const Napi::CallbackInfo& info) {
  // Int32Value() would wrap (2**32 + 3 is fd 3): range-check instead.
  const int fd = static_cast<int>(IntegerArg(info, 0, "fd", 0, INT32_MAX));
  const int operation =
      static_cast<int>(IntegerArg(info, 1, "flock operation", 0, INT32_MAX));
  if ((operation & LOCK_NB) == 0) {
    throw Napi::RangeError::New(info.Env(), "flock operation must include LOCK_NB");
  }
  int rc;
  do {
    rc = flock(fd, operation);
  } while (rc != 0 && errno == EINTR);
  return Napi::Number::New(info.Env(), rc == 0 ? 0 : -errno);
}

// prctl(PR_SET_DUMPABLE, 0 or 1) -> 0 or a negative errno. Not dumpable: no
// core dump of this process (it holds every open slot's protector key), and
// no ptrace or /proc/PID/mem access by other users' processes.
Napi::Value SetDumpable(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), "dumpable must be a boolean");
  }
  const unsigned long flag = info[0].As<Napi::Boolean>().Value() ? 1 : 0;
  const int rc = prctl(PR_SET_DUMPABLE, flag, 0, 0, 0);
  return Napi::Number::New(info.Env(), rc == 0 ? 0 : -errno);
}

// prctl(PR_GET_DUMPABLE) -> 0, 1 or 2 (suid_dumpable), or a negative errno.
Napi::Value GetDumpable(const Napi::CallbackInfo& info) {
  const int rc = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  return Napi::Number::New(info.Env(), rc >= 0 ? rc : -errno);
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(info.Env(), "error class must be a function");
  }
  AddonData* data = info.Env().GetInstanceData<AddonData>();
  data->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// Flags lib needs that Node's fs.constants lacks, with this platform's values.
Napi::Object Constants(Napi::Env env) {
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("O_PATH", Napi::Number::New(env, O_PATH));
  constants.Set("LOCK_EX", Napi::Number::New(env, LOCK_EX));
  constants.Set("LOCK_NB", Napi::Number::New(env, LOCK_NB));
  constants.Freeze();
  return constants;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("constants", Constants(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("setPolicy", Napi::Function::New(env, Start<SetPolicyWorker>));
  exports.Set("getPolicy", Napi::Function::New(env, Start<GetPolicyWorker>));
  exports.Set("addKey", Napi::Function::New(env, Start<AddKeyWorker>));
  exports.Set("removeKey", Napi::Function::New(env, Start<RemoveKeyWorker>));
  exports.Set("getKeyStatus", Napi::Function::New(env, Start<KeyStatusWorker>));
  exports.Set("getNonce", Napi::Function::New(env, Start<NonceWorker>));
  exports.Set("probe", Napi::Function::New(env, Start<ProbeWorker>));
  exports.Set("flock", Napi::Function::New(env, Flock));
  exports.Set("setDumpable", Napi::Function::New(env, SetDumpable));
  exports.Set("getDumpable", Napi::Function::New(env, GetDumpable));
  return exports;
}

}  // namespace

NODE_API_MODULE(fscrypt_local, Init)
