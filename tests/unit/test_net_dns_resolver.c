/* Tests relay/net/dns.c against a real Unbound started here on 127.0.0.1:<free
 * port> with local zones: MX ordering, implicit/null MX, TXT, CNAME, failures. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "relay/net/dns.h"

#define UNBOUND "/usr/sbin/unbound"

static char g_dir[64];
static pid_t g_unbound = -1;
static uint16_t g_port;
static int g_blackhole = -1;        /* bound UDP socket that never answers */
static uint16_t g_blackhole_port;
static uint16_t g_closed_port;      /* nothing listens there */
static pid_t g_fake = -1;
static uint16_t g_servfail_port, g_garbage_port;

/* ------------------------------------------------------------- helpers */

static uint16_t free_udp_port(int *keep_fd)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	uint16_t port;

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	if (keep_fd != NULL)
		*keep_fd = fd;
	else
		close(fd);
	return port;
}

static void set_server(struct config_addr *a, const char *ip, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;

	memset(a, 0, sizeof(*a));
	snprintf(a->host, sizeof(a->host), "%s", ip);
	a->port = port;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	a->salen = sizeof(*sin);
}

/* One raw A query for ready.test; true when any answer with our id came. */
static bool unbound_answers(void)
{
	static const unsigned char q[] = {
		0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
		5, 'r', 'e', 'a', 'd', 'y', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	};
	unsigned char buf[512];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct pollfd pfd;
	bool ok = false;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0)
		return false;
	sin.sin_port = htons(g_port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sin, sizeof(sin)) == (ssize_t)sizeof(q)) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 100) == 1) {
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			ok = n >= 12 && buf[0] == 0x12 && buf[1] == 0x34;
		}
	}
	close(fd);
	return ok;
}

static void write_conf(const char *path)
{
	FILE *f = fopen(path, "w");
	char s255[256], s100[101];

	assert_non_null(f);
	memset(s255, 'a', 255);
	s255[255] = '\0';
	memset(s100, 'b', 100);
	s100[100] = '\0';
	fprintf(f,
		"server:\n"
		"  interface: 127.0.0.1\n"
		"  port: %u\n"
		"  do-daemonize: no\n"
		"  username: \"\"\n"
		"  chroot: \"\"\n"
		"  directory: \"%s\"\n"
		"  pidfile: \"%s/pid\"\n"
		"  use-syslog: no\n"
		"  logfile: \"%s/log\"\n"
		"  verbosity: 1\n"
		"  do-not-query-localhost: no\n"
		"  do-ip6: no\n"
		"  module-config: \"iterator\"\n"
		"  rrset-roundrobin: no\n"      /* the shuffle seen must be ours */
		"  access-control: 127.0.0.0/8 allow\n"
		"  local-zone: \"test.\" static\n"
		"  local-zone: \"refused.test.\" refuse\n"
		"  local-data: \"ready.test. A 127.0.0.9\"\n"
		/* preferences 5 < 10 = 10 < 20, with an equal pair */
		"  local-data: \"multi.test. MX 20 c.mx.test.\"\n"
		"  local-data: \"multi.test. MX 10 a.mx.test.\"\n"
		"  local-data: \"multi.test. MX 10 b.mx.test.\"\n"
		"  local-data: \"multi.test. MX 5 d.mx.test.\"\n"
		"  local-data: \"a.mx.test. A 127.0.1.1\"\n"
		"  local-data: \"b.mx.test. A 127.0.1.2\"\n"
		"  local-data: \"c.mx.test. A 127.0.1.3\"\n"
		"  local-data: \"c.mx.test. AAAA ::1\"\n"
		"  local-data: \"d.mx.test. AAAA 2001:db8::4\"\n"
		"  local-data: \"implicit.test. A 127.0.2.1\"\n"
		"  local-data: \"implicit.test. AAAA 2001:db8::5\"\n"
		"  local-data: \"nullmx.test. MX 0 .\"\n"
		"  local-data: 'nodata.test. TXT \"only text here\"'\n"
		"  local-data: \"noaddr.test. MX 10 ghost.test.\"\n"
		"  local-data: \"partial.test. MX 10 ghost.test.\"\n"
		"  local-data: \"partial.test. MX 20 a.mx.test.\"\n"
		"  local-data: \"tempmx.test. MX 10 mx.refused.test.\"\n"
		"  local-data: 'txt.test. TXT \"v=STSv1; id=20260618001;\"'\n"
		"  local-data: 'txt.test. TXT \"%s\" \"%s\"'\n",
		g_port, g_dir, g_dir, g_dir, s255, s100);
	/* 40 MX records (capped at 32) and 20+20 addresses (capped at 16). */
	for (int i = 0; i < 40; i++)
		fprintf(f, "  local-data: \"many.test. MX %d h%02d.many.test.\"\n", 100 - i, i);
	for (int i = 0; i < 20; i++) {
		fprintf(f, "  local-data: \"manyaddr.test. A 127.0.3.%d\"\n", i + 1);
		fprintf(f, "  local-data: \"manyaddr.test. AAAA 2001:db8::%x\"\n", i + 1);
	}
	/* 6 x 255 bytes: more than the 1232-byte EDNS size, so truncated over
	 * UDP and fetched again over TCP. */
	fprintf(f, "  local-data: 'big.test. TXT");
	for (int i = 0; i < 6; i++)
		fprintf(f, " \"%s\"", s255);
	fprintf(f, "'\n");
	/* Unbound does not chase CNAMEs of local-data, but it does inside an
	 * authoritative zone, as a recursive resolver would. */
	fprintf(f, "auth-zone:\n  name: \"cn.\"\n  zonefile: \"%s/cn.zone\"\n"
		"  for-downstream: yes\n  for-upstream: yes\n", g_dir);
	assert_int_equal(fclose(f), 0);
}

static void write_zone(const char *path)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fprintf(f,
		"$ORIGIN cn.\n$TTL 300\n"
		"@ SOA ns.cn. host.cn. 1 3600 600 86400 300\n"
		"@ NS ns.cn.\n"
		"ns A 127.0.0.1\n"
		"alias CNAME target\n"
		"alias2 CNAME alias\n"
		"target A 127.0.4.1\n"
		"target AAAA 2001:db8::41\n"
		"mxcn MX 10 alias2\n"
		"mxalias CNAME mxtarget\n"
		"mxtarget MX 7 target\n"
		"_mta-sts.pointed CNAME _mta-sts.policy\n"
		"_mta-sts.policy TXT \"v=STSv1; id=cname1\"\n"
		"dangling CNAME nowhere\n");
	assert_int_equal(fclose(f), 0);
}

/* A fake DNS server in a child process: answers every query on sfd with
 * SERVFAIL, and on gfd with a NOERROR header promising an answer that is
 * not there (a malformed message). */
static void fake_server(int sfd, int gfd)
{
	unsigned char buf[1500];
	struct pollfd p[2] = { { .fd = sfd, .events = POLLIN }, { .fd = gfd, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0)
			_exit(1);
		for (int i = 0; i < 2; i++) {
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			ssize_t n;
			size_t off = 12;

			if (!(p[i].revents & POLLIN))
				continue;
			n = recvfrom(p[i].fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
			if (n < 17)
				continue;
			buf[2] |= 0x80;                       /* QR */
			if (i == 0) {
				buf[3] = 0x80 | 2;            /* RA, SERVFAIL */
			} else {
				while (off < (size_t)n && buf[off] != 0)
					off += buf[off] + 1u;
				off += 5;                     /* root label, type, class */
				if (off > (size_t)n)
					continue;
				buf[3] = 0x80;                /* NOERROR */
				buf[6] = 0, buf[7] = 1;       /* ANCOUNT 1, but no record */
				buf[8] = buf[9] = buf[10] = buf[11] = 0;
				n = (ssize_t)off;
			}
			(void)sendto(p[i].fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
		}
	}
}

static int world_up(void **state)
{
	char conf[128];
	struct stat st;

	if (stat(UNBOUND, &st) != 0) {
		fprintf(stderr, "%s missing\n", UNBOUND);
		return -1;
	}
	snprintf(g_dir, sizeof(g_dir), "/tmp/stsrelay-dns-XXXXXX");
	if (mkdtemp(g_dir) == NULL)
		return -1;
	g_port = free_udp_port(NULL);
	g_blackhole_port = free_udp_port(&g_blackhole);
	g_closed_port = free_udp_port(NULL);
	snprintf(conf, sizeof(conf), "%s/unbound.conf", g_dir);
	write_conf(conf);
	snprintf(conf, sizeof(conf), "%s/cn.zone", g_dir);
	write_zone(conf);
	snprintf(conf, sizeof(conf), "%s/unbound.conf", g_dir);

	{
		int sfd, gfd;
		g_servfail_port = free_udp_port(&sfd);
		g_garbage_port = free_udp_port(&gfd);
		g_fake = fork();
		if (g_fake < 0)
			return -1;
		if (g_fake == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);  /* never outlive the test */
			fake_server(sfd, gfd);
		}
		close(sfd);
		close(gfd);
	}

	g_unbound = fork();
	if (g_unbound < 0)
		return -1;
	if (g_unbound == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(UNBOUND, "unbound", "-d", "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {  /* at most ~10 s */
		int status;
		if (waitpid(g_unbound, &status, WNOHANG) == g_unbound) {
			fprintf(stderr, "unbound exited (see %s/log)\n", g_dir);
			g_unbound = -1;
			return -1;
		}
		if (unbound_answers())
			return 0;
		usleep(100 * 1000);
	}
	fprintf(stderr, "unbound did not answer in time (see %s/log)\n", g_dir);
	return -1;
}

static int world_down(void **state)
{
	char cmd[160];

	if (g_unbound > 0) {
		kill(g_unbound, SIGTERM);
		waitpid(g_unbound, NULL, 0);
		g_unbound = -1;
	}
	if (g_fake > 0) {
		kill(g_fake, SIGKILL);
		waitpid(g_fake, NULL, 0);
		g_fake = -1;
	}
	if (g_blackhole >= 0)
		close(g_blackhole);
	if (g_dir[0] != '\0' && getenv("KEEP_DNS_WORLD") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", g_dir);
	}
	return 0;
}

/* A loop + resolver per test; the loop must close cleanly at the end. */
struct env {
	uv_loop_t loop;
	struct dns *dns;
	uv_timer_t tick;      /* wakes the loop while we wait for callbacks */
	int outstanding;      /* callbacks still expected */
	bool in_lookup;       /* a callback must never run inside a lookup call */
};

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

static void env_init(struct env *e, uint16_t port, unsigned timeout_ms, unsigned tries)
{
	struct config_addr srv;
	struct dns_options o = { .timeout_ms = timeout_ms, .tries = tries };

	memset(e, 0, sizeof(*e));
	assert_int_equal(uv_loop_init(&e->loop), 0);
	assert_int_equal(uv_timer_init(&e->loop, &e->tick), 0);
	set_server(&srv, "127.0.0.1", port);
	assert_int_equal(dns_new(&e->loop, &srv, 1, &o, &e->dns), 0);
	assert_non_null(e->dns);
}

/* Runs the loop until every expected callback came, at most max_ms. */
static void env_wait(struct env *e, unsigned max_ms)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	uv_timer_start(&e->tick, on_tick, 20, 20);
	while (e->outstanding > 0) {
		uv_run(&e->loop, UV_RUN_ONCE);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > (long)max_ms)
			fail_msg("callbacks still missing after %u ms: %d", max_ms, e->outstanding);
	}
	uv_timer_stop(&e->tick);
}

/* dns_free, then the loop must end by itself and close without leftovers. */
static void env_done(struct env *e)
{
	dns_free(e->dns);
	e->dns = NULL;
	uv_close((uv_handle_t *)&e->tick, NULL);
	assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&e->loop), 0);
}

static const char *ntop(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (ss->ss_family == AF_INET)
		return inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)len);
	if (ss->ss_family == AF_INET6)
		return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)len);
	return "?";
}

/* Callbacks store the result for the test body to inspect. */
struct got {
	struct env *e;
	int calls;
	struct dns_mx_result *mx;
	struct dns_txt_result *txt;
	struct dns_addr_result *addr;
};

static void got_mx(struct dns_mx_result *res, void *arg)
{
	struct got *g = arg;

	assert_false(g->e->in_lookup);
	g->calls++;
	g->mx = res;
	g->e->outstanding--;
}

static void got_txt(struct dns_txt_result *res, void *arg)
{
	struct got *g = arg;

	assert_false(g->e->in_lookup);
	g->calls++;
	g->txt = res;
	g->e->outstanding--;
}

static void got_addr(struct dns_addr_result *res, void *arg)
{
	struct got *g = arg;

	assert_false(g->e->in_lookup);
	g->calls++;
	g->addr = res;
	g->e->outstanding--;
}

static struct dns_mx_result *mx_sync(struct env *e, const char *domain, struct got *g)
{
	memset(g, 0, sizeof(*g));
	g->e = e;
	e->in_lookup = true;
	assert_int_equal(dns_resolve_mx(e->dns, domain, got_mx, g, NULL), 0);
	e->in_lookup = false;
	e->outstanding++;
	env_wait(e, 10000);
	assert_int_equal(g->calls, 1);
	assert_non_null(g->mx);
	return g->mx;
}

static struct dns_txt_result *txt_sync(struct env *e, const char *name, struct got *g)
{
	memset(g, 0, sizeof(*g));
	g->e = e;
	e->in_lookup = true;
	assert_int_equal(dns_lookup_txt(e->dns, name, got_txt, g, NULL), 0);
	e->in_lookup = false;
	e->outstanding++;
	env_wait(e, 10000);
	assert_int_equal(g->calls, 1);
	return g->txt;
}

static struct dns_addr_result *addr_sync(struct env *e, const char *name, struct got *g)
{
	memset(g, 0, sizeof(*g));
	g->e = e;
	e->in_lookup = true;
	assert_int_equal(dns_lookup_addr(e->dns, name, got_addr, g, NULL), 0);
	e->in_lookup = false;
	e->outstanding++;
	env_wait(e, 10000);
	assert_int_equal(g->calls, 1);
	return g->addr;
}

/* ---------------------------------------------------------------- tests */

static void test_mx_order_and_shuffle(void **state)
{
	struct env e;
	struct got g;
	int a_first = 0, b_first = 0;
	char buf[64];

	env_init(&e, g_port, 2000, 2);
	for (int run = 0; run < 50; run++) {
		struct dns_mx_result *r = mx_sync(&e, "multi.test", &g);

		assert_int_equal(r->status, DNS_OK);
		assert_false(r->implicit);
		assert_int_equal(r->nhosts, 4);
		assert_string_equal(r->hosts[0].name, "d.mx.test");
		assert_int_equal(r->hosts[0].preference, 5);
		assert_int_equal(r->hosts[1].preference, 10);
		assert_int_equal(r->hosts[2].preference, 10);
		assert_string_equal(r->hosts[3].name, "c.mx.test");
		assert_int_equal(r->hosts[3].preference, 20);
		if (strcmp(r->hosts[1].name, "a.mx.test") == 0) {
			assert_string_equal(r->hosts[2].name, "b.mx.test");
			a_first++;
		} else {
			assert_string_equal(r->hosts[1].name, "b.mx.test");
			assert_string_equal(r->hosts[2].name, "a.mx.test");
			b_first++;
		}
		for (size_t i = 0; i < r->nhosts; i++)
			assert_int_equal(r->hosts[i].status, DNS_OK);
		/* d: AAAA only; c: A first, then AAAA */
		assert_int_equal(r->hosts[0].naddrs, 1);
		assert_string_equal(ntop(&r->hosts[0].addrs[0], buf, sizeof(buf)), "2001:db8::4");
		assert_int_equal(r->hosts[3].naddrs, 2);
		assert_string_equal(ntop(&r->hosts[3].addrs[0], buf, sizeof(buf)), "127.0.1.3");
		assert_string_equal(ntop(&r->hosts[3].addrs[1], buf, sizeof(buf)), "::1");
		dns_mx_result_free(r);
	}
	assert_true(a_first > 0);
	assert_true(b_first > 0);
	env_done(&e);
}

static void test_mx_implicit(void **state)
{
	struct env e;
	struct got g;
	char buf[64];
	struct dns_mx_result *r;

	env_init(&e, g_port, 2000, 2);
	r = mx_sync(&e, "implicit.test.", &g);  /* trailing dot accepted */
	assert_int_equal(r->status, DNS_OK);
	assert_true(r->implicit);
	assert_int_equal(r->nhosts, 1);
	assert_string_equal(r->hosts[0].name, "implicit.test");
	assert_int_equal(r->hosts[0].preference, 0);
	assert_int_equal(r->hosts[0].naddrs, 2);
	assert_string_equal(ntop(&r->hosts[0].addrs[0], buf, sizeof(buf)), "127.0.2.1");
	assert_string_equal(ntop(&r->hosts[0].addrs[1], buf, sizeof(buf)), "2001:db8::5");
	assert_int_equal(((struct sockaddr_in *)&r->hosts[0].addrs[0])->sin_port, 0);
	dns_mx_result_free(r);

	/* exists, but neither MX nor A/AAAA */
	r = mx_sync(&e, "nodata.test", &g);
	assert_int_equal(r->status, DNS_NO_ADDRESS);
	assert_true(r->implicit);
	assert_int_equal(r->nhosts, 1);
	assert_int_equal(r->hosts[0].status, DNS_NODATA);
	assert_int_equal(r->hosts[0].naddrs, 0);
	dns_mx_result_free(r);
	env_done(&e);
}

static void test_mx_null_and_nxdomain(void **state)
{
	struct env e;
	struct got g;
	struct dns_mx_result *r;

	env_init(&e, g_port, 2000, 2);
	r = mx_sync(&e, "nullmx.test", &g);
	assert_int_equal(r->status, DNS_NULL_MX);
	assert_int_equal(r->nhosts, 0);
	assert_string_equal(dns_status_name(r->status), "null-mx");
	dns_mx_result_free(r);

	r = mx_sync(&e, "nothere.test", &g);
	assert_int_equal(r->status, DNS_NXDOMAIN);
	assert_int_equal(r->nhosts, 0);
	assert_false(r->implicit);
	dns_mx_result_free(r);
	env_done(&e);
}

static void test_mx_hosts_without_address(void **state)
{
	struct env e;
	struct got g;
	char buf[64];
	struct dns_mx_result *r;

	env_init(&e, g_port, 2000, 2);
	r = mx_sync(&e, "noaddr.test", &g);
	assert_int_equal(r->status, DNS_NO_ADDRESS);
	assert_int_equal(r->nhosts, 1);
	assert_string_equal(r->hosts[0].name, "ghost.test");
	assert_int_equal(r->hosts[0].status, DNS_NXDOMAIN);
	assert_int_equal(r->hosts[0].naddrs, 0);
	dns_mx_result_free(r);

	/* the dead host stays in the list, for the log */
	r = mx_sync(&e, "partial.test", &g);
	assert_int_equal(r->status, DNS_OK);
	assert_int_equal(r->nhosts, 2);
	assert_string_equal(r->hosts[0].name, "ghost.test");
	assert_int_equal(r->hosts[0].status, DNS_NXDOMAIN);
	assert_int_equal(r->hosts[0].naddrs, 0);
	assert_null(r->hosts[0].addrs);
	assert_string_equal(r->hosts[1].name, "a.mx.test");
	assert_int_equal(r->hosts[1].status, DNS_OK);
	assert_int_equal(r->hosts[1].naddrs, 1);
	assert_string_equal(ntop(&r->hosts[1].addrs[0], buf, sizeof(buf)), "127.0.1.1");
	dns_mx_result_free(r);

	/* the only MX host's zone refuses: temporary */
	r = mx_sync(&e, "tempmx.test", &g);
	assert_int_equal(r->status, DNS_TEMPFAIL);
	assert_int_equal(r->nhosts, 1);
	assert_int_equal(r->hosts[0].status, DNS_TEMPFAIL);
	assert_string_equal(r->hosts[0].why, "SERVFAIL, REFUSED or unreachable");
	dns_mx_result_free(r);
	env_done(&e);
}

static void test_cname(void **state)
{
	struct env e;
	struct got g;
	char buf[64];
	struct dns_mx_result *r;
	struct dns_addr_result *a;

	struct dns_txt_result *t;

	env_init(&e, g_port, 2000, 2);
	/* two hops: alias2 -> alias -> target */
	a = addr_sync(&e, "alias2.cn", &g);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->naddrs, 2);
	assert_string_equal(ntop(&a->addrs[0], buf, sizeof(buf)), "127.0.4.1");
	assert_string_equal(ntop(&a->addrs[1], buf, sizeof(buf)), "2001:db8::41");
	dns_addr_result_free(a);

	a = addr_sync(&e, "dangling.cn", &g);  /* CNAME to nothing */
	assert_int_equal(a->status, DNS_NODATA);
	assert_int_equal(a->naddrs, 0);
	dns_addr_result_free(a);

	/* MX target that is an alias (not allowed, but seen): addresses followed */
	r = mx_sync(&e, "mxcn.cn", &g);
	assert_int_equal(r->status, DNS_OK);
	assert_int_equal(r->nhosts, 1);
	assert_string_equal(r->hosts[0].name, "alias2.cn");
	assert_int_equal(r->hosts[0].naddrs, 2);
	assert_string_equal(ntop(&r->hosts[0].addrs[0], buf, sizeof(buf)), "127.0.4.1");
	dns_mx_result_free(r);

	/* the domain itself is an alias: the MX of its target */
	r = mx_sync(&e, "mxalias.cn", &g);
	assert_int_equal(r->status, DNS_OK);
	assert_false(r->implicit);
	assert_int_equal(r->nhosts, 1);
	assert_string_equal(r->hosts[0].name, "target.cn");
	assert_int_equal(r->hosts[0].preference, 7);
	dns_mx_result_free(r);

	/* _mta-sts TXT behind a CNAME (RFC 8461 allows it) */
	t = txt_sync(&e, "_mta-sts.pointed.cn", &g);
	assert_int_equal(t->status, DNS_OK);
	assert_int_equal(t->nrecords, 1);
	assert_string_equal(t->records[0].strings[0].data, "v=STSv1; id=cname1");
	dns_txt_result_free(t);
	env_done(&e);
}

static void test_bounds(void **state)
{
	struct env e;
	struct got g;
	char buf[64];
	struct dns_mx_result *r;
	struct dns_addr_result *a;
	size_t n4 = 0, n6 = 0;

	env_init(&e, g_port, 2000, 2);
	r = mx_sync(&e, "many.test", &g);
	/* h39 has preference 61, the lowest; 32 hosts kept, lowest preferences */
	assert_int_equal(r->nhosts, DNS_MAX_MX_HOSTS);
	assert_string_equal(r->hosts[0].name, "h39.many.test");
	assert_int_equal(r->hosts[0].preference, 61);
	assert_int_equal(r->hosts[31].preference, 92);
	for (size_t i = 1; i < r->nhosts; i++)
		assert_true(r->hosts[i - 1].preference < r->hosts[i].preference);
	assert_int_equal(r->status, DNS_NO_ADDRESS);  /* none of them has an address */
	dns_mx_result_free(r);

	a = addr_sync(&e, "manyaddr.test", &g);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->naddrs, DNS_MAX_ADDRS);
	for (size_t i = 0; i < a->naddrs; i++) {
		if (a->addrs[i].ss_family == AF_INET) {
			assert_int_equal(n6, 0);  /* IPv4 first */
			n4++;
		} else {
			n6++;
		}
		ntop(&a->addrs[i], buf, sizeof(buf));
	}
	assert_int_equal(n4, DNS_MAX_ADDRS / 2);
	assert_int_equal(n6, DNS_MAX_ADDRS / 2);
	dns_addr_result_free(a);
	env_done(&e);
}

static void test_txt(void **state)
{
	struct env e;
	struct got g;
	struct dns_txt_result *t;
	bool saw_sts = false, saw_split = false;

	env_init(&e, g_port, 2000, 2);
	t = txt_sync(&e, "txt.test", &g);
	assert_int_equal(t->status, DNS_OK);
	assert_int_equal(t->nrecords, 2);
	for (size_t i = 0; i < t->nrecords; i++) {
		struct dns_txt_record *rec = &t->records[i];
		if (rec->nstrings == 1) {
			assert_int_equal(rec->strings[0].len, strlen("v=STSv1; id=20260618001;"));
			assert_string_equal(rec->strings[0].data, "v=STSv1; id=20260618001;");
			saw_sts = true;
		} else {
			assert_int_equal(rec->nstrings, 2);
			assert_int_equal(rec->strings[0].len, 255);
			assert_int_equal(rec->strings[1].len, 100);
			assert_int_equal(rec->strings[0].data[0], 'a');
			assert_int_equal(rec->strings[0].data[254], 'a');
			assert_int_equal(rec->strings[0].data[255], '\0');
			assert_int_equal(rec->strings[1].data[99], 'b');
			saw_split = true;
		}
	}
	assert_true(saw_sts && saw_split);
	dns_txt_result_free(t);

	/* bigger than the EDNS size: c-ares retries over TCP */
	t = txt_sync(&e, "big.test", &g);
	assert_int_equal(t->status, DNS_OK);
	assert_int_equal(t->nrecords, 1);
	assert_int_equal(t->records[0].nstrings, 6);
	for (size_t j = 0; j < 6; j++)
		assert_int_equal(t->records[0].strings[j].len, 255);
	dns_txt_result_free(t);

	t = txt_sync(&e, "nothere.test", &g);
	assert_int_equal(t->status, DNS_NXDOMAIN);
	assert_int_equal(t->nrecords, 0);
	assert_null(t->records);
	dns_txt_result_free(t);

	t = txt_sync(&e, "a.mx.test", &g);  /* has an A record, no TXT */
	assert_int_equal(t->status, DNS_NODATA);
	assert_int_equal(t->nrecords, 0);
	dns_txt_result_free(t);

	t = txt_sync(&e, "x.refused.test", &g);
	assert_int_equal(t->status, DNS_TEMPFAIL);
	assert_string_equal(t->why, "SERVFAIL, REFUSED or unreachable");
	dns_txt_result_free(t);
	env_done(&e);
}

static void test_addr_statuses(void **state)
{
	struct env e;
	struct got g;
	struct dns_addr_result *a;

	env_init(&e, g_port, 2000, 2);
	a = addr_sync(&e, "nothere.test", &g);
	assert_int_equal(a->status, DNS_NXDOMAIN);
	assert_int_equal(a->naddrs, 0);
	dns_addr_result_free(a);
	a = addr_sync(&e, "nodata.test", &g);
	assert_int_equal(a->status, DNS_NODATA);
	dns_addr_result_free(a);
	env_done(&e);
}

static void test_timeout_is_tempfail(void **state)
{
	struct env e;
	struct got g;
	struct dns_mx_result *r;
	struct dns_txt_result *t;

	/* a socket that swallows queries: a real timeout */
	env_init(&e, g_blackhole_port, 200, 1);
	r = mx_sync(&e, "multi.test", &g);
	assert_int_equal(r->status, DNS_TEMPFAIL);
	assert_string_equal(r->why, "timeout");
	assert_int_equal(r->nhosts, 0);
	dns_mx_result_free(r);
	t = txt_sync(&e, "txt.test", &g);
	assert_int_equal(t->status, DNS_TEMPFAIL);
	dns_txt_result_free(t);
	env_done(&e);

	/* SERVFAIL from the only server */
	env_init(&e, g_servfail_port, 500, 2);
	r = mx_sync(&e, "multi.test", &g);
	assert_int_equal(r->status, DNS_TEMPFAIL);
	assert_string_equal(r->why, "SERVFAIL, REFUSED or unreachable");
	dns_mx_result_free(r);
	t = txt_sync(&e, "txt.test", &g);
	assert_int_equal(t->status, DNS_TEMPFAIL);
	dns_txt_result_free(t);
	env_done(&e);

	/* an answer that does not parse */
	env_init(&e, g_garbage_port, 500, 2);
	r = mx_sync(&e, "multi.test", &g);
	assert_int_equal(r->status, DNS_TEMPFAIL);
	assert_string_equal(r->why, "malformed answer");
	dns_mx_result_free(r);
	env_done(&e);

	/* nobody on the port: ICMP refusal or timeout, both temporary */
	env_init(&e, g_closed_port, 200, 2);
	r = mx_sync(&e, "multi.test", &g);
	assert_int_equal(r->status, DNS_TEMPFAIL);
	dns_mx_result_free(r);
	env_done(&e);
}

static void test_bad_names(void **state)
{
	struct env e;
	char longname[300];

	env_init(&e, g_port, 2000, 2);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(dns_resolve_mx(e.dns, "", got_mx, NULL, NULL), -EINVAL);
	assert_int_equal(dns_resolve_mx(e.dns, ".", got_mx, NULL, NULL), -EINVAL);
	assert_int_equal(dns_resolve_mx(e.dns, "a..b", got_mx, NULL, NULL), -EINVAL);
	assert_int_equal(dns_lookup_txt(e.dns, "a b", got_txt, NULL, NULL), -EINVAL);
	assert_int_equal(dns_lookup_addr(e.dns, longname, got_addr, NULL, NULL), -EINVAL);
	assert_int_equal(dns_lookup_addr(e.dns, NULL, got_addr, NULL, NULL), -EINVAL);
	env_done(&e);

	/* creation: resolv.conf when no servers; bad arguments refused */
	{
		uv_loop_t loop;
		struct dns *d = NULL;
		struct config_addr bad;

		assert_int_equal(uv_loop_init(&loop), 0);
		assert_int_equal(dns_new(&loop, NULL, 0, NULL, &d), 0);
		assert_non_null(d);
		dns_free(d);
		assert_int_equal(dns_new(&loop, NULL, 1, NULL, &d), -EINVAL);
		assert_null(d);
		memset(&bad, 0, sizeof(bad));
		bad.sa.ss_family = AF_UNIX;
		assert_int_equal(dns_new(&loop, &bad, 1, NULL, &d), -EINVAL);
		assert_null(d);
		dns_free(NULL);
		assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
		assert_int_equal(uv_loop_close(&loop), 0);
	}
}

/* In-flight lookups at dns_free: each callback once, DNS_CANCELLED; a
 * dns_cancel'ed one never; new lookups refused; the loop closes. */
struct cancel_ctx {
	struct env *e;
	int mx, txt, addr, cancelled_cb;
	int relookup_rc;
};

static void cancel_mx(struct dns_mx_result *r, void *arg)
{
	struct cancel_ctx *c = arg;

	assert_int_equal(r->status, DNS_CANCELLED);
	assert_int_equal(r->nhosts, 0);
	c->mx++;
	c->relookup_rc = dns_lookup_txt(c->e->dns, "txt.test", got_txt, NULL, NULL);
	dns_mx_result_free(r);
}

static void cancel_txt(struct dns_txt_result *r, void *arg)
{
	struct cancel_ctx *c = arg;

	assert_int_equal(r->status, DNS_CANCELLED);
	c->txt++;
	dns_txt_result_free(r);
}

static void cancel_addr(struct dns_addr_result *r, void *arg)
{
	struct cancel_ctx *c = arg;

	assert_int_equal(r->status, DNS_CANCELLED);
	c->addr++;
	dns_addr_result_free(r);
}

static void never_called(struct dns_txt_result *r, void *arg)
{
	struct cancel_ctx *c = arg;

	c->cancelled_cb++;
	dns_txt_result_free(r);
}

static void on_free_timer(uv_timer_t *t)
{
	struct env *e = t->data;

	dns_free(e->dns);
	uv_close((uv_handle_t *)t, NULL);
}

static void test_free_with_queries_in_flight(void **state)
{
	struct env e;
	struct cancel_ctx c = { .e = &e, .relookup_rc = 1 };
	struct dns_query *q = NULL;
	uv_timer_t t;

	env_init(&e, g_blackhole_port, 5000, 2);
	assert_int_equal(dns_resolve_mx(e.dns, "multi.test", cancel_mx, &c, NULL), 0);
	assert_int_equal(dns_lookup_txt(e.dns, "txt.test", cancel_txt, &c, NULL), 0);
	assert_int_equal(dns_lookup_addr(e.dns, "a.mx.test", cancel_addr, &c, NULL), 0);
	assert_int_equal(dns_lookup_txt(e.dns, "txt.test", never_called, &c, &q), 0);
	assert_non_null(q);
	dns_cancel(q);
	/* free from inside the loop after 100 ms, with everything pending */
	uv_timer_init(&e.loop, &t);
	t.data = &e;
	uv_timer_start(&t, on_free_timer, 100, 0);
	uv_close((uv_handle_t *)&e.tick, NULL);
	assert_int_equal(uv_run(&e.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(c.mx, 1);
	assert_int_equal(c.txt, 1);
	assert_int_equal(c.addr, 1);
	assert_int_equal(c.cancelled_cb, 0);
	assert_int_equal(c.relookup_rc, -ESHUTDOWN);
	assert_int_equal(uv_loop_close(&e.loop), 0);
}

/* dns_free called from a result callback: teardown after it returns. */
struct selfree_ctx {
	struct env *e;
	int first, second;
	enum dns_status second_status;
};

static void selfree_first(struct dns_txt_result *r, void *arg)
{
	struct selfree_ctx *c = arg;

	assert_int_equal(r->status, DNS_OK);
	c->first++;
	dns_free(c->e->dns);
	dns_free(c->e->dns);  /* a second call while tearing down is ignored */
	dns_txt_result_free(r);
}

static void selfree_second(struct dns_mx_result *r, void *arg)
{
	struct selfree_ctx *c = arg;

	c->second++;
	c->second_status = r->status;
	dns_mx_result_free(r);
}

static void test_free_from_callback(void **state)
{
	struct env e;
	struct selfree_ctx c = { .e = &e };

	env_init(&e, g_port, 2000, 2);
	assert_int_equal(dns_lookup_txt(e.dns, "txt.test", selfree_first, &c, NULL), 0);
	assert_int_equal(dns_resolve_mx(e.dns, "multi.test", selfree_second, &c, NULL), 0);
	uv_close((uv_handle_t *)&e.tick, NULL);
	assert_int_equal(uv_run(&e.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(c.first, 1);
	assert_int_equal(c.second, 1);
	/* the MX may have finished first or been cut short */
	assert_true(c.second_status == DNS_OK || c.second_status == DNS_CANCELLED);
	assert_int_equal(uv_loop_close(&e.loop), 0);
}

/* Lookups started from a callback, many at once, on one resolver. */
struct chain_ctx {
	struct env *e;
	int done;
};

static void chain_addr(struct dns_addr_result *r, void *arg)
{
	struct chain_ctx *c = arg;

	assert_false(c->e->in_lookup);
	assert_int_equal(r->status, DNS_OK);
	c->done++;
	c->e->outstanding--;
	dns_addr_result_free(r);
}

static void chain_mx(struct dns_mx_result *r, void *arg)
{
	struct chain_ctx *c = arg;

	assert_int_equal(r->status, DNS_OK);
	for (size_t i = 0; i < r->nhosts; i++) {
		c->e->in_lookup = true;
		assert_int_equal(dns_lookup_addr(c->e->dns, r->hosts[i].name, chain_addr, c, NULL), 0);
		c->e->in_lookup = false;
		c->e->outstanding++;
	}
	c->e->outstanding--;
	dns_mx_result_free(r);
}

static void test_parallel_and_chained(void **state)
{
	struct env e;
	struct chain_ctx c = { .e = &e };

	env_init(&e, g_port, 2000, 2);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(dns_resolve_mx(e.dns, "multi.test", chain_mx, &c, NULL), 0);
		e.outstanding++;
	}
	env_wait(&e, 10000);
	assert_int_equal(c.done, 20 * 4);
	env_done(&e);
}

/* c-ares fails some queries inside ares_query itself (here: connect() to
 * the broadcast address is refused); the callback must still come later,
 * from the loop. */
static void test_immediate_failure_is_deferred(void **state)
{
	struct env e;
	struct got g;
	struct config_addr srv;
	struct dns_mx_result *r;
	struct dns_addr_result *a;

	memset(&e, 0, sizeof(e));
	assert_int_equal(uv_loop_init(&e.loop), 0);
	assert_int_equal(uv_timer_init(&e.loop, &e.tick), 0);
	set_server(&srv, "255.255.255.255", 53);
	assert_int_equal(dns_new(&e.loop, &srv, 1, NULL, &e.dns), 0);
	r = mx_sync(&e, "multi.test", &g);   /* asserts the callback ran outside */
	assert_int_equal(r->status, DNS_TEMPFAIL);
	dns_mx_result_free(r);
	a = addr_sync(&e, "a.mx.test", &g);
	assert_int_equal(a->status, DNS_TEMPFAIL);
	dns_addr_result_free(a);

	/* finished but not yet delivered at dns_free: CANCELLED, inside
	 * dns_free; a cancelled one: never */
	{
		struct cancel_ctx c = { .e = &e };
		struct dns_query *q = NULL;

		assert_int_equal(dns_lookup_txt(e.dns, "txt.test", cancel_txt, &c, NULL), 0);
		assert_int_equal(dns_lookup_txt(e.dns, "txt.test", never_called, &c, &q), 0);
		dns_cancel(q);
		assert_int_equal(c.txt, 0);
		env_done(&e);
		assert_int_equal(c.txt, 1);
		assert_int_equal(c.cancelled_cb, 0);
	}
}

static void test_status_names(void **state)
{
	assert_string_equal(dns_status_name(DNS_OK), "ok");
	assert_string_equal(dns_status_name(DNS_NXDOMAIN), "nxdomain");
	assert_string_equal(dns_status_name(DNS_NODATA), "nodata");
	assert_string_equal(dns_status_name(DNS_NULL_MX), "null-mx");
	assert_string_equal(dns_status_name(DNS_NO_ADDRESS), "no-address");
	assert_string_equal(dns_status_name(DNS_TEMPFAIL), "tempfail");
	assert_string_equal(dns_status_name(DNS_CANCELLED), "cancelled");
	assert_string_equal(dns_status_name((enum dns_status)99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_names),
		cmocka_unit_test(test_mx_order_and_shuffle),
		cmocka_unit_test(test_mx_implicit),
		cmocka_unit_test(test_mx_null_and_nxdomain),
		cmocka_unit_test(test_mx_hosts_without_address),
		cmocka_unit_test(test_cname),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_txt),
		cmocka_unit_test(test_addr_statuses),
		cmocka_unit_test(test_timeout_is_tempfail),
		cmocka_unit_test(test_immediate_failure_is_deferred),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_free_with_queries_in_flight),
		cmocka_unit_test(test_free_from_callback),
		cmocka_unit_test(test_parallel_and_chained),
	};

	alarm(100);  /* a hung loop must not hang the suite */
	return cmocka_run_group_tests(tests, world_up, world_down);
}
