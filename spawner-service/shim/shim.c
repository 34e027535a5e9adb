/*
 * faas-shim: the entrypoint of a prewarmed container (run under the container's init process).
 *
 * It waits for ONE framed message on stdin, then replaces itself with the function's process:
 * chdir(cwd), stdin replaced by /dev/null, execve(argv, env) with a PATH search when argv[0] has
 * no slash (over the PATH of the message's env). It reads exactly the frame's bytes from stdin,
 * never more: every read asks for the bytes still missing from the current field.
 *
 * Frame (every integer is an unsigned 32-bit big-endian number, "u32"):
 *
 *   magic  4 bytes   "FSH" then the version byte 0x01
 *   argc   u32       1 .. 4096
 *   argc x { len u32 <= 131071, len bytes }       argv; argv[0] is not empty
 *   envc   u32       0 .. 4096
 *   envc x { len u32 <= 131071, len bytes }       "KEY=VALUE", KEY not empty
 *   cwd    len u32 <= 4095, len bytes             working directory; empty means "/"
 *
 * The bytes of all elements together are at most 1 MiB. No element may contain a NUL byte. The
 * env is the whole environment of the function (nothing is inherited from the shim's own).
 *
 * Exit statuses of the shim itself (a message is written on stderr, nothing is executed):
 *   120  truncated frame (end of stdin or a read error before the frame is complete)
 *   121  bad magic or unknown version
 *   122  a count, an element or the total over its bound
 *   123  malformed element (NUL inside, empty argv[0], env entry without "KEY=")
 *   124  set-up failed (out of memory, /dev/null, chdir)
 *   126  the program was found but cannot be executed
 *   127  the program was not found
 * Once execve succeeds, the exit status is the function's own.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAGIC "FSH\x01"
#define MAX_ELEMENT 131071u
#define MAX_COUNT 4096u
#define MAX_TOTAL (1u << 20)
#define MAX_CWD 4095u
#define MAX_PATH 4096u
/* Docker's default PATH, used when the message's env has none. */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum {
	E_TRUNCATED = 120,
	E_MAGIC = 121,
	E_BOUND = 122,
	E_MALFORMED = 123,
	E_SETUP = 124,
	E_NOEXEC = 126,
	E_NOTFOUND = 127,
};

static uint32_t total; /* element bytes read so far, bounded by MAX_TOTAL */

static void die(int status, const char *what)
{
	dprintf(2, "faas-shim: %s\n", what);
	_exit(status);
}

static void die_errno(int status, const char *what)
{
	dprintf(2, "faas-shim: %s: %s\n", what, strerror(errno));
	_exit(status);
}

/* Exactly n bytes from stdin (unbuffered: nothing past them is consumed). */
static void read_exact(void *buf, size_t n)
{
	char *p = buf;
	while (n > 0) {
		ssize_t got = read(0, p, n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			die(E_TRUNCATED, "truncated frame");
		p += got;
		n -= (size_t)got;
	}
}

static uint32_t read_u32(void)
{
	unsigned char b[4];
	read_exact(b, sizeof b);
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* One length-prefixed element as a C string; its length is checked before any byte is read. */
static char *read_element(uint32_t max)
{
	uint32_t len = read_u32();
	if (len > max || len > MAX_TOTAL - total)
		die(E_BOUND, "element over its bound");
	total += len;
	char *s = malloc((size_t)len + 1);
	if (s == NULL)
		die(E_SETUP, "out of memory");
	read_exact(s, len);
	if (memchr(s, '\0', len) != NULL)
		die(E_MALFORMED, "NUL inside an element");
	s[len] = '\0';
	return s;
}

/* A count then that many elements, as a NULL-terminated vector. */
static char **read_list(uint32_t min)
{
	uint32_t n = read_u32();
	if (n > MAX_COUNT)
		die(E_BOUND, "too many elements");
	if (n < min)
		die(E_MALFORMED, "empty argv");
	char **list = calloc((size_t)n + 1, sizeof *list);
	if (list == NULL)
		die(E_SETUP, "out of memory");
	for (uint32_t i = 0; i < n; i++)
		list[i] = read_element(MAX_ELEMENT);
	return list;
}

static const char *env_path(char **envp)
{
	for (; *envp != NULL; envp++)
		if (strncmp(*envp, "PATH=", 5) == 0)
			return *envp + 5;
	return DEFAULT_PATH;
}

/* execve, searching PATH like execvpe when the name has no slash; returns only on failure. */
static int exec_search(char **argv, char **envp)
{
	if (strchr(argv[0], '/') != NULL) {
		execve(argv[0], argv, envp);
		return errno;
	}
	size_t name = strlen(argv[0]);
	int denied = 0;
	const char *dir = env_path(envp);
	for (;;) {
		const char *end = strchr(dir, ':');
		size_t len = end != NULL ? (size_t)(end - dir) : strlen(dir);
		char full[MAX_PATH];
		if (len + 2 + name < sizeof full) {
			/* An empty PATH entry is the working directory. */
			memcpy(full, len > 0 ? dir : ".", len > 0 ? len : 1);
			size_t at = len > 0 ? len : 1;
			full[at] = '/';
			memcpy(full + at + 1, argv[0], name + 1);
			execve(full, argv, envp);
			if (errno == EACCES)
				denied = 1;
			else if (errno != ENOENT && errno != ENOTDIR)
				return errno;
		}
		if (end == NULL)
			return denied ? EACCES : ENOENT;
		dir = end + 1;
	}
}

int main(void)
{
	char magic[4];
	read_exact(magic, sizeof magic);
	if (memcmp(magic, MAGIC, sizeof magic) != 0)
		die(E_MAGIC, "bad magic or unknown version");
	char **argv = read_list(1);
	char **envp = read_list(0);
	char *cwd = read_element(MAX_CWD);
	if (argv[0][0] == '\0')
		die(E_MALFORMED, "empty argv[0]");
	for (char **e = envp; *e != NULL; e++)
		if ((*e)[0] == '=' || strchr(*e, '=') == NULL)
			die(E_MALFORMED, "env entry without KEY=");

	/* The function gets no stdin: whatever follows the frame is never read by anyone here. */
	int null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0)
		die_errno(E_SETUP, "/dev/null");
	if (null != 0)
		close(null);
	if (chdir(cwd[0] != '\0' ? cwd : "/") != 0)
		die_errno(E_SETUP, "chdir");

	errno = exec_search(argv, envp);
	die_errno(errno == ENOENT || errno == ENOTDIR ? E_NOTFOUND : E_NOEXEC, argv[0]);
	return E_NOEXEC; /* not reached */
}
