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

#include "relay/core/clock.h"
#include "relay/core/config.h"
#include "relay/core/metrics.h"
#include "relay/net/dns.h"
#include "relay/net/redis.h"
#include "relay/core/log.h"
#include "sts/cache.h"
#include "sts/dns.h"
#include "sts/engine.h"
#include "sts/fleet.h"
#include "sts/mx_match.h"

/*
 * engine mode: one warm-up lookup (fetches the policy from the real policy
 * host), then `count` lookups with `conc` in flight, each checked to be an
 * enforce verdict from the cache whose policy matches the MX host (the
 * decision delivery acts on). The TXT lookup of every decision goes either
 * to a real DNS server (--dns, the daemon's path) or to an in-process
 * answer (engine cost alone, no DNS round trip).
 *
 * fleet mode: the engine of a new node whose local cache is cold and whose
 * fleet's Redis cache is warm: `count` distinct domains (fN.DOMAIN), each a
 * first decision answered from Redis (one round trip, no HTTPS fetch;
 * checked by the engine's fleet-hit counter), then the same domains again
 * from the local cache it filled. Redis gets the copies first: the policy
 * of DOMAIN, fetched once from the real policy host, stored under each name.
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
	char (*names)[STS_DOMAIN_MAX + 1]; /* fleet mode: lookup i is names[i] */
	struct sts_verdict *kept;          /* fleet mode: the warm-up's verdict */
	bool keep;
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
	if (b->keep && ok && b->kept == NULL)
		b->kept = v;
	else
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
		const char *d = b->names != NULL ? b->names[b->started] : b->domain;

		b->started++;
		if (sts_engine_lookup(b->e, d, on_verdict, b, NULL) != 0) {
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

/* ---- fleet mode ---- */

struct redis_wait {
	uv_loop_t *loop;
	bool up, failed;
	long pending;
};

static void on_redis_state(void *arg, bool up)
{
	struct redis_wait *w = arg;

	w->up = up;
	if (up)
		uv_stop(w->loop);
}

static void on_set(void *arg, const redisReply *rp)
{
	struct redis_wait *w = arg;

	if (rp == NULL || rp->type == REDIS_REPLY_ERROR)
		w->failed = true;
	if (--w->pending == 0)
		uv_stop(w->loop);
}

/* One timed pass of count lookups (names or b->domain) with conc in flight. */
static double timed_pass(struct engine_bench *b, uv_loop_t *loop, uv_timer_t *deadline,
			 long count)
{
	double t0;

	memset(b->first_bad, 0, sizeof(b->first_bad));
	b->warm = true;
	b->count = count;
	b->started = b->done = b->good = 0;
	uv_timer_start(deadline, on_deadline, 120000, 0);
	t0 = now_s();
	start_more(b);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_timer_stop(deadline);
	return now_s() - t0;
}

/* Stores the warm-up's policy in Redis under every name, as a fleet node
 * that fetched it would (sts/fleet.h's key and sts/cache.h's format). */
static int seed_redis(uv_loop_t *loop, struct redis *redis, struct redis_wait *w,
		      const struct sts_verdict *v, char (*names)[STS_DOMAIN_MAX + 1], long n)
{
	struct sts_cache_entry e;
	long i;

	for (i = 0; i < n && !w->failed; i++) {
		char k[STS_DOMAIN_MAX + 64], ttl[24], *buf = NULL;
		const char *argv[5] = { "SET", k, NULL, "EX", ttl };
		size_t lens[5], len = 0;
		int rc;

		memset(&e, 0, sizeof(e));
		snprintf(e.domain, sizeof(e.domain), "%s", names[i]);
		snprintf(e.id, sizeof(e.id), "%s", v->id);
		e.has_policy = true;
		e.fetched_at = v->fetched_at;
		e.expires_at = v->expires_at;
		e.text = v->policy_text;
		e.text_len = v->policy_text_len;
		if (sts_cache_format(&e, &buf, &len) != 0)
			return -1;
		snprintf(k, sizeof(k), STS_FLEET_PREFIX "sts:policy:%s", names[i]);
		snprintf(ttl, sizeof(ttl), "%lld", (long long)(v->expires_at - clock_now()));
		argv[2] = buf;
		lens[0] = 3;
		lens[1] = strlen(k);
		lens[2] = len;
		lens[3] = 2;
		lens[4] = strlen(ttl);
		rc = redis_command(redis, on_set, w, NULL, 5, argv, lens);
		free(buf);
		if (rc != 0)
			return -1;
		w->pending++;
		/* in batches: each reply must come within the client's timeout */
		if (w->pending >= 1000)
			uv_run(loop, UV_RUN_DEFAULT);
	}
	if (w->pending > 0)
		uv_run(loop, UV_RUN_DEFAULT);
	return w->failed || w->pending != 0 ? -1 : 0;
}

static int run_fleet(const char *domain, const char *mx, const char *ca_file, int https_port,
		     const char *redis_url, long count, int conc)
{
	static struct config_redis url;
	uv_loop_t loop;
	struct fake_res fr;
	struct sts_resolver res;
	struct sts_engine_config ec = { .cache_dir = NULL, .persist = false, .load = false,
					.refresh = false, .ca_file = ca_file,
					.https_port = (uint16_t)https_port,
					.fetch_timeout_ms = 10000 };
	struct redis_wait w = { 0 };
	struct redis_config rc = { .url = &url, .on_state = on_redis_state, .arg = &w };
	struct redis *redis = NULL;
	struct sts_fleet *fleet = NULL;
	struct sts_engine *first = NULL;
	struct engine_bench b;
	uv_timer_t deadline;
	char err[256];
	char (*names)[STS_DOMAIN_MAX + 1] = NULL;
	double fleet_s = 0, local_s = 0;
	long i, hits = 0, local_good = 0;
	int rcode = 1;

	memset(&b, 0, sizeof(b));
	memset(&fr, 0, sizeof(fr));
	if (config_parse_redis_url(redis_url, &url, err, sizeof(err)) != 0) {
		fprintf(stderr, "bad redis URL %s: %s\n", redis_url, err);
		return 2;
	}
	names = calloc((size_t)count, sizeof(*names));
	if (names == NULL || uv_loop_init(&loop) != 0) {
		free(names);
		return 1;
	}
	for (i = 0; i < count; i++)
		snprintf(names[i], sizeof(names[i]), "f%ld.%s", i, domain);
	b.loop = w.loop = &loop;
	b.domain = domain;
	b.mx = mx;
	b.conc = conc;
	uv_timer_init(&loop, &deadline);
	deadline.data = &b;
	uv_unref((uv_handle_t *)&deadline);
	uv_idle_init(&loop, &fr.idle);
	fr.idle.data = &fr;
	fr.addr = "127.0.0.1";
	res.ctx = &fr;
	res.lookup_txt = fake_txt;
	res.lookup_addr = fake_addr;
	res.cancel = fake_cancel;
	if (redis_new(&loop, &rc, &redis) != 0)
		goto out;
	/* the connection comes from the loop; the deadline keeps it running */
	uv_ref((uv_handle_t *)&deadline);
	uv_timer_start(&deadline, on_deadline, 10000, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_timer_stop(&deadline);
	uv_unref((uv_handle_t *)&deadline);
	if (!w.up) {
		fprintf(stderr, "no connection to Redis at %s\n", redis_url);
		goto out;
	}
	if (sts_fleet_new(&loop, redis, "bench", 10000, &fleet) != 0)
		goto out;
	ec.shared = sts_fleet_shared(fleet);

	/* the one real fetch, by a first engine (node) */
	if (sts_engine_new(&loop, &ec, &res, &first) != 0)
		goto out;
	b.e = first;
	b.count = 1;
	b.keep = true;
	uv_timer_start(&deadline, on_deadline, 30000, 0);
	start_more(&b);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (b.kept == NULL) {
		fprintf(stderr, "warm-up lookup failed: %s\n", b.first_bad);
		goto out;
	}
	if (seed_redis(&loop, redis, &w, b.kept, names, count) != 0) {
		fprintf(stderr, "cannot store the policies in Redis\n");
		goto out;
	}

	/* a new node: cold local cache, warm fleet */
	if (sts_engine_new(&loop, &ec, &res, &b.e) != 0)
		goto out;
	b.names = names;
	hits = (long)metrics_value(METRICS_FLEET_POLICIES, "hit", NULL);
	fleet_s = timed_pass(&b, &loop, &deadline, count);
	hits = (long)metrics_value(METRICS_FLEET_POLICIES, "hit", NULL) - hits;
	if (b.good != count || hits != count) {
		if (b.first_bad[0] == '\0')
			snprintf(b.first_bad, sizeof(b.first_bad), "%ld of %ld from the fleet",
				 hits, count);
		goto report;
	}
	/* the same domains again: now from its local cache */
	local_s = timed_pass(&b, &loop, &deadline, count);
	local_good = b.good;
report:
	printf("{\"mode\": \"fleet\", \"count\": %ld, \"good\": %ld, \"fleet_hits\": %ld, "
	       "\"concurrency\": %d, \"seconds\": %.6f, \"per_sec\": %.1f, "
	       "\"local_seconds\": %.6f, \"local_per_sec\": %.1f, \"first_bad\": ",
	       count, b.good, hits, conc, fleet_s, fleet_s > 0 ? (double)count / fleet_s : 0,
	       local_s, local_s > 0 ? (double)count / local_s : 0);
	print_json_str(b.first_bad);
	printf("}\n");
	rcode = hits == count && local_good == count ? 0 : 1;
out:
	if (b.kept != NULL)
		sts_verdict_free(b.kept);
	if (b.e != first)
		sts_engine_free(b.e);
	sts_engine_free(first);
	sts_fleet_free(fleet);
	redis_free(redis);
	uv_close((uv_handle_t *)&fr.idle, NULL);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "warning: loop not empty at exit\n");
	free(names);
	return rcode;
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
		"       bench_sts fleet DOMAIN MX_HOST COUNT CONC CA_FILE HTTPS_PORT REDIS_URL\n"
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
	if (argc == 9 && strcmp(argv[1], "fleet") == 0) {
		count = strtol(argv[4], NULL, 10);
		conc = atoi(argv[5]);
		if (count < 1 || count > 1000000 || conc < 1 || conc > MAX_CONC)
			return 2;
		return run_fleet(argv[2], argv[3], argv[6], atoi(argv[7]), argv[8], count, conc);
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
