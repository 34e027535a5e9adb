/*
 * faas-shim: the entrypoint of a prewarmed container (run under the container's init process).
 *
 * It waits for ONE framed message on stdin, then runs the function as its child: stdin on
 * /dev/null, stdout and stderr pipes the shim relays; chdir(cwd), then
 * execve(argv, env) with a PATH search when argv[0] has no slash (over the PATH of that env). It
 * reads exactly the frame's bytes from stdin, never more: every read asks for the bytes still
 * missing from the current field.
 *
 * Frame (every integer is an unsigned 32-bit big-endian number, "u32"):
 *
 *   magic  4 bytes   "FSH" then the version byte 0x02
 *   argc   u32       1 .. 4096
 *   argc x { len u32 <= 131071, len bytes }       argv; argv[0] is not empty
 *   envc   u32       0 .. 4096
 *   envc x { len u32 <= 131071, len bytes }       "KEY=VALUE", KEY not empty
 *   cwd    len u32 <= 4095, len bytes             working directory; empty: the shim's own
 *
 * The bytes of all elements together are at most 1 MiB. No element may contain a NUL byte. The
 * function's environment is the shim's own (what the engine made of the image's and the
 * container's env), each frame entry added or replacing the entry of the same KEY.
 *
 * Output: the shim's stdout is a sequence of records, so that the function cannot forge the end:
 *
 *   'D' len u32, len bytes    bytes the function wrote on its stdout, in order
 *   'L' len u32, len bytes    bytes the function wrote on its stderr, in order (so that none of
 *                             them can come after the end record)
 *   'X' status u32            the function ended: its exit status, or 128 + the signal that
 *                             killed it; the last record
 *   'E' status u32            the function could not be executed (126: found but cannot be
 *                             executed, 127: not found; a message on stderr says why); the
 *                             last record
 *
 * The end record comes as soon as the function's process ends, once the output it left in the
 * pipe is relayed; what processes it left behind write later is not, even while they keep
 * writing (the container ends with the shim, as it ends with the function's process under
 * `docker run`). The shim then exits 0.
 *
 * With the one argument `--linger` (how the pool starts it), the function runs in a process
 * group of its own (as under `docker run --init`), and after an 'X' record that is not a death by
 * SIGKILL the shim kills what is left of that group, then stays until its stdin ends (the
 * spawner hangs up on the container, which the engine passes on as the end of stdin), reading
 * and dropping what comes: the container's end, and the engine's work on it, come when the
 * spawner is done with the call, not while it stores and returns the result. After a death by
 * SIGKILL (the memory limit's) it exits at once: the spawner waits for the container's end to
 * read the engine's verdict.
 *
 * Exit statuses of the shim itself, with a message on its stderr and no end record (120-124:
 * nothing ran):
 *   120  truncated frame (end of stdin or a read error before the frame is complete)
 *   121  bad magic or unknown version
 *   122  a count, an element or the total over its bound
 *   123  malformed element (NUL inside, empty argv[0], env entry without "KEY=")
 *   124  set-up failed (an unknown argument, out of memory, /dev/null, pipe, fork, setpgid, chdir)
 *   125  the relay of the output failed (its stdout was closed): the function may have run
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAGIC "FSH\x02"
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
	E_RELAY = 125,
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

/* Write all of buf to fd 1, or exit: nobody reads the records any more. */
static void write_all(const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t put = write(1, p, n);
		if (put < 0 && errno == EINTR)
			continue;
		if (put <= 0)
			_exit(E_RELAY);
		p += put;
		n -= (size_t)put;
	}
}

static void put_record(char type, uint32_t value, const void *data, size_t len)
{
	unsigned char head[5] = {(unsigned char)type, value >> 24, value >> 16, value >> 8, value};
	write_all(head, sizeof head);
	if (len > 0)
		write_all(data, len);
}

/* The shim's environment with each frame entry added, or replacing the one of the same KEY. */
static char **merge_env(char **frame)
{
	size_t own = 0, extra = 0;
	while (environ != NULL && environ[own] != NULL)
		own++;
	while (frame[extra] != NULL)
		extra++;
	char **env = calloc(own + extra + 1, sizeof *env);
	if (env == NULL)
		die(E_SETUP, "out of memory");
	size_t n = 0;
	for (size_t i = 0; i < own; i++)
		env[n++] = environ[i];
	for (char **e = frame; *e != NULL; e++) {
		size_t key = (size_t)(strchr(*e, '=') - *e) + 1;
		size_t at = 0;
		while (at < n && strncmp(env[at], *e, key) != 0)
			at++;
		env[at] = *e;
		if (at == n)
			n++;
	}
	return env;
}

static int report = 2; /* the child's copy of the shim's own stderr */
static int linger;     /* --linger: see the top of the file */

/* The child could not run the function: say why (`status`) on `failed`, and exit. */
static void child_failed(int failed, unsigned char status, const char *what, int error)
{
	dprintf(report, "faas-shim: %s: %s\n", what, strerror(error));
	ssize_t ignored = write(failed, &status, 1);
	(void)ignored;
	_exit(status);
}

/* The child: stdin on /dev/null, stdout and stderr the relay's pipes; reports a failure on
 * `failed` (and says why on the shim's own stderr). */
static void run_child(char **argv, char **envp, const char *cwd, const int pipes[2], int failed)
{
	signal(SIGPIPE, SIG_DFL); /* the function gets the signals' defaults, not the shim's */
	report = fcntl(2, F_DUPFD_CLOEXEC, 3);
	if (linger && setpgid(0, 0) != 0)
		child_failed(failed, E_SETUP, "setpgid", errno);
	int null = open("/dev/null", O_RDONLY);
	if (report < 0 || null < 0 || dup2(null, 0) < 0 || dup2(pipes[0], 1) < 0 ||
	    dup2(pipes[1], 2) < 0)
		child_failed(failed, E_SETUP, "/dev/null", errno);
	if (null > 2)
		close(null);
	if (cwd[0] != '\0' && chdir(cwd) != 0)
		child_failed(failed, E_SETUP, "chdir", errno);
	int error = exec_search(argv, envp);
	child_failed(failed, error == ENOENT || error == ENOTDIR ? E_NOTFOUND : E_NOEXEC, argv[0],
		     error);
}

static int child_ended[2]; /* the self-pipe SIGCHLD writes to */

static void on_child(int sig)
{
	(void)sig;
	int saved = errno;
	ssize_t ignored = write(child_ended[1], "", 1);
	(void)ignored;
	errno = saved;
}

#define RELAY_CHUNK 65536

static const char RECORD_OF[2] = {'D', 'L'}; /* per pipe: stdout, stderr */

/* One read of a (non-blocking) pipe, at most `most` bytes, relayed as its record: the bytes
 * relayed, 0 at the pipe's end, -1 when it holds nothing for now. */
static ssize_t relay_once(int fd, char type, size_t most)
{
	static char buf[RELAY_CHUNK];
	ssize_t got;
	do
		got = read(fd, buf, most < sizeof buf ? most : sizeof buf);
	while (got < 0 && errno == EINTR);
	if (got > 0)
		put_record(type, (uint32_t)got, buf, (size_t)got);
	return got;
}

/* Relay what the pipe holds now, not what the processes the child left behind write after. */
static void relay_left(int fd, char type)
{
	int left = 0;
	if (fd < 0 || ioctl(fd, FIONREAD, &left) != 0)
		return;
	while (left > 0) {
		ssize_t got = relay_once(fd, type, (size_t)left);
		if (got <= 0)
			return;
		left -= (int)got;
	}
}

/* Relay the child's stdout and stderr as 'D' and 'L' records until the child is gone (then what
 * it left in the pipes), or until both pipes end (then wait for the child). */
static void relay(const int pipes[2], pid_t child, int *wstatus)
{
	struct pollfd fds[3] = {
		{.fd = pipes[0], .events = POLLIN},
		{.fd = pipes[1], .events = POLLIN},
		{.fd = child_ended[0], .events = POLLIN},
	};
	for (int open_pipes = 2; open_pipes > 0;) {
		if (poll(fds, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(E_RELAY); /* the function may have run: not a refusal */
		}
		if (fds[2].revents != 0 && waitpid(child, wstatus, WNOHANG) == child) {
			for (int i = 0; i < 2; i++)
				relay_left(fds[i].fd, RECORD_OF[i]);
			return;
		}
		/* One read per wake-up, so that a writer that never pauses cannot hide the end. */
		for (int i = 0; i < 2; i++)
			if (fds[i].fd >= 0 && fds[i].revents != 0 &&
			    relay_once(fds[i].fd, RECORD_OF[i], RELAY_CHUNK) == 0) {
				fds[i].fd = -1; /* poll skips it from now on */
				open_pipes--;
			}
	}
	while (waitpid(child, wstatus, 0) < 0 && errno == EINTR)
		;
}

/* --linger, after the end record: what the function left behind goes, then wait for stdin's end. */
static void linger_until_stdin_ends(pid_t group)
{
	kill(-group, SIGKILL);
	static char buf[4096];
	for (;;) {
		ssize_t got = read(0, buf, sizeof buf);
		if (got == 0 || (got < 0 && errno != EINTR))
			return;
	}
}

int main(int argc, char **args)
{
	if (argc == 2 && strcmp(args[1], "--linger") == 0)
		linger = 1;
	else if (argc != 1)
		die(E_SETUP, "usage: faas-shim [--linger]");
	char magic[4];
	read_exact(magic, sizeof magic);
	if (memcmp(magic, MAGIC, sizeof magic) != 0)
		die(E_MAGIC, "bad magic or unknown version");
	char **argv = read_list(1);
	char **frame_env = read_list(0);
	char *cwd = read_element(MAX_CWD);
	if (argv[0][0] == '\0')
		die(E_MALFORMED, "empty argv[0]");
	for (char **e = frame_env; *e != NULL; e++)
		if ((*e)[0] == '=' || strchr(*e, '=') == NULL)
			die(E_MALFORMED, "env entry without KEY=");
	char **envp = merge_env(frame_env);

	int out[2], err[2], failed[2];
	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
	    pipe2(failed, O_CLOEXEC) != 0 || pipe2(child_ended, O_CLOEXEC | O_NONBLOCK) != 0)
		die_errno(E_SETUP, "pipe");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP; /* a stopped child would keep poll awake */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL) != 0)
		die_errno(E_SETUP, "sigaction");
	/* A closed stdout is the relay's failure (125), not a death by SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	pid_t child = fork();
	if (child < 0)
		die_errno(E_SETUP, "fork");
	if (child == 0)
		run_child(argv, envp, cwd, (int[2]){out[1], err[1]}, failed[1]);
	close(out[1]);
	close(err[1]);
	close(failed[1]);
	if (fcntl(out[0], F_SETFL, O_NONBLOCK) != 0 || fcntl(err[0], F_SETFL, O_NONBLOCK) != 0)
		_exit(E_RELAY);

	int wstatus = 0;
	relay((int[2]){out[0], err[0]}, child, &wstatus);
	unsigned char exec_failed;
	if (read(failed[0], &exec_failed, 1) == 1) {
		if (exec_failed == E_SETUP)
			return E_SETUP; /* nothing ran: no record */
		put_record('E', exec_failed, NULL, 0);
		return 0;
	}
	uint32_t status = WIFEXITED(wstatus) ? (uint32_t)WEXITSTATUS(wstatus)
					     : 128u + (uint32_t)WTERMSIG(wstatus);
	put_record('X', status, NULL, 0);
	if (linger && status != 128u + SIGKILL)
		linger_until_stdin_ends(child);
	return 0;
}
