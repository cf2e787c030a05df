// kernel-floor: what the fscrypt ioctls cost with nothing in between.
//
// The floor that bench/kernel.mjs compares the package against. It issues the
// same ioctls as the package, in the same order, on the same kind of
// filesystem, from one thread, on file descriptors opened outside the timed
// region. Each sample is one clock_gettime(CLOCK_MONOTONIC) pair around one
// ioctl. Output: one JSON document on stdout with every sample in ns, so the
// caller computes statistics the same way for both sides.
//
//   kernel-floor MOUNTPOINT WORKDIR ITERATIONS WARMUP
//
// MOUNTPOINT is an ext4 filesystem with the encrypt feature; WORKDIR is an
// existing directory on it, where fresh empty directories are made for
// SET_POLICY (the mkdir is not timed). Every key added is removed again.
//
// The structures and ioctl numbers are declared here rather than taken from
// <linux/fscrypt.h>: Debian 12's header lags the kernel, and the direction
// bits of these numbers are historically swapped, so they are written out.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FS_IOC_SET_ENCRYPTION_POLICY 0x800c6613UL
#define FS_IOC_ADD_ENCRYPTION_KEY 0xc0506617UL
#define FS_IOC_REMOVE_ENCRYPTION_KEY 0xc0406618UL
#define FS_IOC_GET_ENCRYPTION_KEY_STATUS 0xc080661aUL

#define KEY_SPEC_TYPE_IDENTIFIER 2
#define KEY_STATUS_PRESENT 2
#define MODE_AES_256_XTS 1
#define MODE_AES_256_CTS 4
#define POLICY_FLAGS_PAD_32 0x3
#define KEY_SIZE 64
#define IDENTIFIER_SIZE 16

struct key_specifier {
  uint32_t type;
  uint32_t reserved;
  uint8_t identifier[32];  // the union's 32 bytes; v2 uses the first 16
};

struct policy_v2 {
  uint8_t version;
  uint8_t contents_mode;
  uint8_t filenames_mode;
  uint8_t flags;
  uint8_t log2_data_unit_size;
  uint8_t reserved[3];
  uint8_t identifier[IDENTIFIER_SIZE];
};

struct add_key_arg {
  struct key_specifier spec;
  uint32_t raw_size;
  uint32_t key_id;
  uint32_t flags;
  uint32_t reserved[7];
  uint8_t raw[KEY_SIZE];
};

struct remove_key_arg {
  struct key_specifier spec;
  uint32_t removal_status_flags;
  uint32_t reserved[5];
};

struct key_status_arg {
  struct key_specifier spec;
  uint32_t reserved[6];
  uint32_t status;
  uint32_t status_flags;
  uint32_t user_count;
  uint32_t out_reserved[13];
};

_Static_assert(sizeof(struct key_specifier) == 40, "key specifier is 40 bytes");
_Static_assert(sizeof(struct policy_v2) == 24, "policy v2 is 24 bytes");
_Static_assert(offsetof(struct add_key_arg, raw) == 80, "raw key at 80");
_Static_assert(sizeof(struct remove_key_arg) == 64, "remove arg is 64 bytes");
_Static_assert(offsetof(struct key_status_arg, status) == 64, "status at 64");
_Static_assert(sizeof(struct key_status_arg) == 128, "status arg is 128 bytes");

static void die(const char *what, const char *path) {
  fprintf(stderr, "kernel-floor: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void print_samples(const char *name, const uint64_t *samples, int count,
                          int last) {
  printf("    \"%s\": [", name);
  for (int i = 0; i < count; i++) {
    printf(i == 0 ? "%llu" : ",%llu", (unsigned long long)samples[i]);
  }
  printf("]%s\n", last ? "" : ",");
}

// Runs `count` cycles, each on a fresh 64-byte key: ADD_KEY, GET_KEY_STATUS,
// SET_POLICY on a fresh empty directory (mkdir and open not timed),
// REMOVE_KEY. The time of each ioctl goes to the arrays when they are not
// NULL. bench/kernel.mjs runs the package through the same cycle.
static void run_cycles(int mount_fd, const char *mountpoint,
                       const char *workdir, const char *tag, int count,
                       uint64_t *add_ns, uint64_t *status_ns,
                       uint64_t *policy_ns, uint64_t *remove_ns) {
  for (int i = 0; i < count; i++) {
    struct add_key_arg add;
    memset(&add, 0, sizeof(add));
    add.spec.type = KEY_SPEC_TYPE_IDENTIFIER;
    add.raw_size = KEY_SIZE;
    if (getrandom(add.raw, KEY_SIZE, 0) != KEY_SIZE) die("getrandom", "");
    uint64_t start = now_ns();
    if (ioctl(mount_fd, FS_IOC_ADD_ENCRYPTION_KEY, &add) != 0) {
      die("FS_IOC_ADD_ENCRYPTION_KEY", mountpoint);
    }
    if (add_ns != NULL) add_ns[i] = now_ns() - start;
    explicit_bzero(add.raw, KEY_SIZE);

    struct key_status_arg status;
    memset(&status, 0, sizeof(status));
    status.spec = add.spec;  // type and the identifier the kernel returned
    start = now_ns();
    if (ioctl(mount_fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, &status) != 0) {
      die("FS_IOC_GET_ENCRYPTION_KEY_STATUS", mountpoint);
    }
    if (status_ns != NULL) status_ns[i] = now_ns() - start;
    if (status.status != KEY_STATUS_PRESENT) {
      fprintf(stderr, "kernel-floor: an added key has status %u\n",
              status.status);
      exit(1);
    }

    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s-%d", workdir, tag, i);
    if (mkdir(dir, 0700) != 0) die("mkdir", dir);
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) die("open", dir);
    struct policy_v2 policy;
    memset(&policy, 0, sizeof(policy));
    policy.version = 2;
    policy.contents_mode = MODE_AES_256_XTS;
    policy.filenames_mode = MODE_AES_256_CTS;
    policy.flags = POLICY_FLAGS_PAD_32;
    memcpy(policy.identifier, add.spec.identifier, IDENTIFIER_SIZE);
    start = now_ns();
    if (ioctl(dir_fd, FS_IOC_SET_ENCRYPTION_POLICY, &policy) != 0) {
      die("FS_IOC_SET_ENCRYPTION_POLICY", dir);
    }
    if (policy_ns != NULL) policy_ns[i] = now_ns() - start;
    close(dir_fd);

    struct remove_key_arg remove;
    memset(&remove, 0, sizeof(remove));
    remove.spec = add.spec;
    start = now_ns();
    if (ioctl(mount_fd, FS_IOC_REMOVE_ENCRYPTION_KEY, &remove) != 0) {
      die("FS_IOC_REMOVE_ENCRYPTION_KEY", mountpoint);
    }
    if (remove_ns != NULL) remove_ns[i] = now_ns() - start;
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr,
            "usage: kernel-floor MOUNTPOINT WORKDIR ITERATIONS WARMUP\n");
    return 2;
  }
  const char *mountpoint = argv[1];
  const char *workdir = argv[2];
  int iterations = atoi(argv[3]);
  int warmup = atoi(argv[4]);
  if (iterations <= 0 || warmup < 0) {
    fprintf(stderr, "kernel-floor: ITERATIONS must be > 0, WARMUP >= 0\n");
    return 2;
  }

  int mount_fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (mount_fd < 0) die("open", mountpoint);

  uint64_t *add_ns = calloc((size_t)iterations, sizeof(uint64_t));
  uint64_t *status_ns = calloc((size_t)iterations, sizeof(uint64_t));
  uint64_t *policy_ns = calloc((size_t)iterations, sizeof(uint64_t));
  uint64_t *remove_ns = calloc((size_t)iterations, sizeof(uint64_t));
  uint64_t *open_ns = calloc((size_t)iterations, sizeof(uint64_t));
  if (!add_ns || !status_ns || !policy_ns || !remove_ns || !open_ns) {
    die("calloc", "samples");
  }

  run_cycles(mount_fd, mountpoint, workdir, "warmup", warmup, NULL, NULL,
             NULL, NULL);
  run_cycles(mount_fd, mountpoint, workdir, "timed", iterations, add_ns,
             status_ns, policy_ns, remove_ns);

  // The package opens its path on every call (the fd is not cached), so the
  // cost of that open()+close() is measured too, with the addon's flags.
  for (int i = 0; i < iterations; i++) {
    uint64_t start = now_ns();
    int fd = open(mountpoint, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) die("open", mountpoint);
    close(fd);
    open_ns[i] = now_ns() - start;
  }

  printf("{\n  \"unit\": \"ns\",\n  \"samples\": {\n");
  print_samples("addKey", add_ns, iterations, 0);
  print_samples("getKeyStatus", status_ns, iterations, 0);
  print_samples("setPolicy", policy_ns, iterations, 0);
  print_samples("removeKey", remove_ns, iterations, 0);
  print_samples("openClose", open_ns, iterations, 1);
  printf("  }\n}\n");
  close(mount_fd);
  return 0;
}
