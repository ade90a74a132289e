/* Benchmark helper for tests/bench/run: MTA-STS policy decisions per second from
 * a warm cache, through stsrelay's engine or a postfix-mta-sts-resolver socketmap. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "relay/core/config.h"
#include "relay/net/dns.h"
#include "relay/core/log.h"
#include "sts/dns.h"
#include "sts/engine.h"
#include "sts/mx_match.h"

/*
 * engine mode: one warm-up lookup (fetches the policy from the real policy
 * host), then `count` lookups with `conc` in flight, each checked to be an
 * enforce verdict from the cache whose policy matches the MX host (the
 * decision delivery acts on). The TXT lookup of every decision goes either
 * to a real DNS server (--dns, the daemon's path) or to an in-process
 * answer (engine cost alone, no DNS round trip).
 *
 * socketmap mode: `conc` persistent connections, one query outstanding on
 * each (what Postfix does), `count` queries in all; each reply must start
 * with "OK secure".
 *
 * Output: one JSON object on stdout. Exit 0 only if every decision was right.
 */

#define BENCH_TXT "v=STSv1; id=bench1"
#define MAX_CONC 1024

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A JSON string of s; quotes, backslashes and control bytes are dropped
 * (the text is a diagnostic only). */
static void print_json_str(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++)
		if (*s != '"' && *s != '\\' && (unsigned char)*s >= 0x20)
			putchar(*s);
	putchar('"');
}

/* ---- in-process resolver: answers from the loop, never inline ---- */

struct fake_q {
	struct fake_q *next, **prevp;
	sts_txt_lookup_cb txt_cb;
	sts_addr_lookup_cb addr_cb;
	void *arg;
};

struct fake_res {
	uv_idle_t idle;
	struct fake_q *head;
	const char *addr;       /* answer to every A/AAAA question */
};

static void fake_unlink(struct fake_q *q)
{
	*q->prevp = q->next;
	if (q->next != NULL)
		q->next->prevp = q->prevp;
}

static void fake_on_idle(uv_idle_t *h)
{
	struct fake_res *fr = h->data;
	struct sts_txt_string str = { (const unsigned char *)BENCH_TXT, strlen(BENCH_TXT) };
	struct sts_txt_record rec = { &str, 1 };
	const char *addrs[1];

	/* callbacks may add queries: take one at a time from the head */
	while (fr->head != NULL) {
		struct fake_q *q = fr->head;

		fake_unlink(q);
		addrs[0] = fr->addr;
		if (q->txt_cb != NULL)
			q->txt_cb(q->arg, STS_DNS_OK, NULL, &rec, 1);
		else
			q->addr_cb(q->arg, STS_DNS_OK, NULL, addrs, 1);
		free(q);
	}
	uv_idle_stop(h);
}

static int fake_add(struct fake_res *fr, sts_txt_lookup_cb tcb, sts_addr_lookup_cb acb,
		    void *arg, void **handle)
{
	struct fake_q *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return -1;
	q->txt_cb = tcb;
	q->addr_cb = acb;
	q->arg = arg;
	q->next = fr->head;
	if (q->next != NULL)
		q->next->prevp = &q->next;
	fr->head = q;
	q->prevp = &fr->head;
	if (handle != NULL)
		*handle = q;
	uv_idle_start(&fr->idle, fake_on_idle);
	return 0;
}

static int fake_txt(void *ctx, const char *name, sts_txt_lookup_cb cb, void *arg, void **handle)
{
	return fake_add(ctx, cb, NULL, arg, handle);
}

static int fake_addr(void *ctx, const char *name, sts_addr_lookup_cb cb, void *arg,
		     void **handle)
{
	return fake_add(ctx, NULL, cb, arg, handle);
}

static void fake_cancel(void *ctx, void *handle)
{
	struct fake_q *q = handle;

	fake_unlink(q);
	free(q);
}

/* ---- engine mode ---- */

struct engine_bench {
	uv_loop_t *loop;
	struct sts_engine *e;
	const char *domain, *mx;
	long count, started, done, good;
	int conc;
	char first_bad[256];
	bool warm;
};

static void start_more(struct engine_bench *b);

static void on_verdict(void *arg, struct sts_verdict *v)
{
	struct engine_bench *b = arg;
	bool ok = !v->cancelled && v->decision == STS_DECISION_ENFORCE &&
		  (b->warm ? v->source == STS_SOURCE_CACHE : v->source != STS_SOURCE_NONE) &&
		  sts_mx_match(&v->policy, b->mx, NULL);

	if (ok)
		b->good++;
	else if (b->first_bad[0] == '\0')
		snprintf(b->first_bad, sizeof(b->first_bad), "decision=%s source=%s error=%s %.150s",
			 sts_decision_name(v->decision), sts_source_name(v->source),
			 v->error_type != SMTP_TLS_RESULT_SUCCESS ? smtp_tls_result_name(v->error_type) : "-", v->error_detail);
	b->done++;
	sts_verdict_free(v);
	if (b->warm)
		start_more(b);
	/* c-ares and curl may keep handles open: stop the loop ourselves */
	if (b->done >= b->count)
		uv_stop(b->loop);
}

static void on_deadline(uv_timer_t *t)
{
	struct engine_bench *b = t->data;

	snprintf(b->first_bad, sizeof(b->first_bad), "deadline: %ld of %ld done", b->done, b->count);
	uv_stop(b->loop);
}

static void start_more(struct engine_bench *b)
{
	while (b->started < b->count && b->started - b->done < b->conc) {
		b->started++;
		if (sts_engine_lookup(b->e, b->domain, on_verdict, b, NULL) != 0) {
			snprintf(b->first_bad, sizeof(b->first_bad), "sts_engine_lookup failed");
			b->done++;
		}
	}
}

static int parse_dns(const char *spec, struct config *cfg)
{
	char line[256], err[256];
	int n = snprintf(line, sizeof(line), "dns_servers = %s\n", spec);

	config_defaults(cfg);
	if (n < 0 || (size_t)n >= sizeof(line) ||
	    config_parse(cfg, line, (size_t)n, "--dns", err, sizeof(err)) != 0 || cfg->ndns_servers != 1) {
		fprintf(stderr, "bad --dns %s\n", spec);
		return -1;
	}
	return 0;
}

static int run_engine(const char *domain, const char *mx, const char *dns_spec,
		      const char *ca_file, int https_port, long count, int conc)
{
	static struct config cfg;   /* large: not on the stack */
	uv_loop_t loop;
	struct fake_res fr;
	struct dns *dns = NULL;
	struct sts_resolver res;
	struct sts_engine_config ec = { .cache_dir = NULL, .persist = false, .load = false,
					.refresh = false, .ca_file = ca_file,
					.https_port = (uint16_t)https_port,
					.fetch_timeout_ms = 10000 };
	struct engine_bench b;
	uv_timer_t deadline;
	double t0, t1;
	int rc = 1;

	memset(&b, 0, sizeof(b));
	memset(&fr, 0, sizeof(fr));
	b.domain = domain;
	b.mx = mx;
	b.conc = conc;
	if (uv_loop_init(&loop) != 0)
		return 1;
	b.loop = &loop;
	uv_timer_init(&loop, &deadline);
	deadline.data = &b;
	uv_unref((uv_handle_t *)&deadline);
	uv_idle_init(&loop, &fr.idle);
	fr.idle.data = &fr;
	fr.addr = "127.0.0.1";
	if (dns_spec != NULL) {
		if (parse_dns(dns_spec, &cfg) != 0 ||
		    dns_new(&loop, cfg.dns_servers, 1, NULL, &dns) != 0) {
			fprintf(stderr, "cannot start the resolver\n");
			goto out;
		}
		sts_dns_resolver(dns, &res);
	} else {
		res.ctx = &fr;
		res.lookup_txt = fake_txt;
		res.lookup_addr = fake_addr;
		res.cancel = fake_cancel;
	}
	if (sts_engine_new(&loop, &ec, &res, &b.e) != 0)
		goto out;

	/* warm-up: the one fetch */
	b.count = 1;
	uv_timer_start(&deadline, on_deadline, 30000, 0);
	start_more(&b);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (b.good != 1) {
		fprintf(stderr, "warm-up lookup failed: %s\n", b.first_bad);
		goto out;
	}
	memset(b.first_bad, 0, sizeof(b.first_bad));
	b.warm = true;
	b.count = count;
	b.started = b.done = b.good = 0;
	uv_timer_start(&deadline, on_deadline, 120000, 0);
	t0 = now_s();
	start_more(&b);
	uv_run(&loop, UV_RUN_DEFAULT);
	t1 = now_s();
	uv_timer_stop(&deadline);
	printf("{\"mode\": \"engine\", \"dns\": \"%s\", \"count\": %ld, \"good\": %ld, "
	       "\"concurrency\": %d, \"seconds\": %.6f, \"per_sec\": %.1f, \"first_bad\": ",
	       dns_spec ? dns_spec : "in-process", b.done, b.good, conc, t1 - t0,
	       (double)b.done / (t1 - t0));
	print_json_str(b.first_bad);
	printf("}\n");
	rc = b.good == count ? 0 : 1;
out:
	sts_engine_free(b.e);
	if (dns != NULL)
		dns_free(dns);
	uv_close((uv_handle_t *)&fr.idle, NULL);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "warning: loop not empty at exit\n");
	return rc;
}

/* ---- socketmap mode ---- */

struct smconn {
	int fd;
	char out[512];
	size_t outlen, outoff;
	char in[4096];
	size_t inlen;
	bool busy;
};

/* A complete netstring "LEN:DATA," at the start of buf: its length in *total
 * and DATA in *data, *dlen. 0 incomplete, 1 complete, -1 malformed. */
static int netstring(const char *buf, size_t len, size_t *total, const char **data,
		     size_t *dlen)
{
	size_t i = 0, n = 0;

	while (i < len && buf[i] >= '0' && buf[i] <= '9' && i < 6)
		n = n * 10 + (size_t)(buf[i++] - '0');
	if (i == len)
		return 0;
	if (i == 0 || buf[i] != ':')
		return -1;
	if (len < i + 1 + n + 1)
		return 0;
	if (buf[i + 1 + n] != ',')
		return -1;
	*data = buf + i + 1;
	*dlen = n;
	*total = i + 1 + n + 1;
	return 1;
}

static int run_socketmap(const char *host, int port, const char *map, const char *domain,
			 long count, int conc)
{
	static struct smconn c[MAX_CONC];
	struct pollfd pfd[MAX_CONC];
	struct sockaddr_in sa;
	char query[300], first_bad[256] = "";
	long sent = 0, done = 0, good = 0;
	double t0, t1;
	int i, qlen, rc = 1;

	qlen = snprintf(query, sizeof(query), "%s %s", map, domain);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || qlen <= 0 ||
	    (size_t)qlen >= sizeof(query) - 16)
		return 2;
	for (i = 0; i < conc; i++) {
		c[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (c[i].fd < 0 || connect(c[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			perror("socketmap connect");
			conc = i;
			goto out;
		}
		c[i].outlen = (size_t)snprintf(c[i].out, sizeof(c[i].out), "%d:%s,", qlen, query);
	}
	t0 = now_s();
	while (done < count) {
		for (i = 0; i < conc; i++) {
			if (!c[i].busy && sent < count) {
				c[i].busy = true;
				c[i].outoff = 0;
				sent++;
			}
			pfd[i].fd = c[i].fd;
			pfd[i].events = !c[i].busy ? 0 : c[i].outoff < c[i].outlen ? POLLOUT : POLLIN;
		}
		if (poll(pfd, (nfds_t)conc, 10000) <= 0) {
			snprintf(first_bad, sizeof(first_bad), "no progress for 10 s");
			break;
		}
		for (i = 0; i < conc; i++) {
			struct smconn *k = &c[i];
			size_t total, dlen;
			const char *data;
			ssize_t n;
			int st;

			if (pfd[i].revents & POLLOUT) {
				n = write(k->fd, k->out + k->outoff, k->outlen - k->outoff);
				if (n <= 0)
					goto broken;
				k->outoff += (size_t)n;
			} else if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				n = read(k->fd, k->in + k->inlen, sizeof(k->in) - k->inlen);
				if (n <= 0)
					goto broken;
				k->inlen += (size_t)n;
				st = netstring(k->in, k->inlen, &total, &data, &dlen);
				if (st < 0)
					goto broken;
				if (st == 1) {
					if (dlen >= 9 && memcmp(data, "OK secure", 9) == 0)
						good++;
					else if (first_bad[0] == '\0')
						snprintf(first_bad, sizeof(first_bad), "%.*s",
							 (int)(dlen < 200 ? dlen : 200), data);
					done++;
					k->busy = false;
					memmove(k->in, k->in + total, k->inlen - total);
					k->inlen -= total;
				}
			}
			continue;
broken:
			snprintf(first_bad, sizeof(first_bad), "connection %d broke", i);
			goto report;
		}
	}
report:
	t1 = now_s();
	printf("{\"mode\": \"socketmap\", \"count\": %ld, \"good\": %ld, \"concurrency\": %d, "
	       "\"seconds\": %.6f, \"per_sec\": %.1f, \"first_bad\": ",
	       done, good, conc, t1 - t0, (double)done / (t1 - t0));
	print_json_str(first_bad);
	printf("}\n");
	rc = good == count ? 0 : 1;
out:
	for (i = 0; i < conc; i++)
		close(c[i].fd);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_sts engine DOMAIN MX_HOST COUNT CONC CA_FILE HTTPS_PORT [DNS_IP:PORT]\n"
		"       bench_sts socketmap IP PORT MAP DOMAIN COUNT CONC\n");
}

int main(int argc, char **argv)
{
	long count;
	int conc;

	log_setup("bench_sts", LOG_FORMAT_TEXT, 0);
	if (argc >= 8 && strcmp(argv[1], "engine") == 0) {
		count = strtol(argv[4], NULL, 10);
		conc = atoi(argv[5]);
		if (count < 1 || conc < 1 || conc > MAX_CONC)
			return 2;
		return run_engine(argv[2], argv[3], argc >= 9 ? argv[8] : NULL, argv[6],
				  atoi(argv[7]), count, conc);
	}
	if (argc == 8 && strcmp(argv[1], "socketmap") == 0) {
		count = strtol(argv[6], NULL, 10);
		conc = atoi(argv[7]);
		if (count < 1 || conc < 1 || conc > MAX_CONC)
			return 2;
		return run_socketmap(argv[2], atoi(argv[3]), argv[4], argv[5], count, conc);
	}
	usage();
	return 2;
}
