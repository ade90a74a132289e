/* A private redis-server for unit tests (Debian's binary): its own config,
 * port and directory under /tmp, started, stopped, killed and paused here. */
#ifndef STSRELAY_TEST_REDIS_SERVER_H
#define STSRELAY_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_REDIS_BIN "/usr/bin/redis-server"

struct test_redis {
	char dir[64];
	uint16_t port;
	pid_t pid;
	char password[32]; /* "" none */
};

static inline uint16_t test_redis_free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static inline bool test_redis_accepts(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Starts (or restarts, same port and directory) the server with an
 * append-only file fsync'd on every write, so a kill -9 loses nothing it
 * answered. 0 or -1. */
static inline int test_redis_start(struct test_redis *t)
{
	char conf[128], port[8];
	FILE *f;
	int i;

	if (t->dir[0] == '\0') {
		snprintf(t->dir, sizeof(t->dir), "/tmp/stsrelay-redis-XXXXXX");
		if (mkdtemp(t->dir) == NULL)
			return -1;
		t->port = test_redis_free_port();
	}
	snprintf(conf, sizeof(conf), "%s/redis.conf", t->dir);
	f = fopen(conf, "w");
	if (f == NULL)
		return -1;
	fprintf(f,
		"port %u\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly yes\n"
		"appendfsync always\ndaemonize no\nlogfile %s/redis.log\n%s%s\n",
		(unsigned)t->port, t->dir, t->dir, t->password[0] ? "requirepass " : "",
		t->password);
	fclose(f);
	snprintf(port, sizeof(port), "%u", (unsigned)t->port);
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (t->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(TEST_REDIS_BIN, "redis-server", conf, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 100; i++) {
		struct timespec ts = { 0, 50 * 1000000L };

		if (test_redis_accepts(t->port))
			return 0;
		nanosleep(&ts, NULL);
	}
	return -1;
}

static inline void test_redis_signal(struct test_redis *t, int sig)
{
	if (t->pid > 0)
		kill(t->pid, sig);
}

/* kill -9 (or SIGTERM) and wait for it. */
static inline void test_redis_stop(struct test_redis *t, int sig)
{
	if (t->pid <= 0)
		return;
	kill(t->pid, SIGCONT);
	kill(t->pid, sig);
	waitpid(t->pid, NULL, 0);
	t->pid = -1;
}

#endif
