/* smtp_conn on a real loopback socket against an OpenSSL server in a thread:
 * writes around the TLS record size and past SMTP_CONN_OUT_MAX reach a slow
 * reader whole and in order; a burst of 500 records is read without a timer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "relay/net/smtp_conn.h"
#include "test_pki.h"
#include "test_util.h"

#define HOST "peer.test"
#define DAY (24 * 3600L)
#define PEER_RCVBUF 4096       /* the peer's receive window: small, so writes queue up */
#define PEER_READ 1000         /* plaintext per SSL_read of the slow peer */
#define PEER_PAUSE_EVERY 4     /* reads between two pauses ... */
#define PEER_PAUSE_US 1000     /* ... of this long */
#define PEER_IO_TIMEOUT_S 10   /* a peer that hears nothing gives up */
#define BURST_RECORDS 500
#define WATCHDOG_MS 15000      /* a write test that takes longer has failed */
#define BURST_TIMER_MS 5000    /* the burst must not need a timer to arrive */
#define MAX_PIECES 8

/* The test's certificate: self-signed for HOST, also the trust anchor. */
static struct {
	char dir[64], ca_file[128];
	EVP_PKEY *key;
	X509 *cert;
} P;

static int setup(void **state)
{
	FILE *f;

	(void)state;
	snprintf(P.dir, sizeof(P.dir), "/tmp/test_relay_smtp_conn.XXXXXX");
	if (!mkdtemp(P.dir))
		return -1;
	snprintf(P.ca_file, sizeof(P.ca_file), "%s/ca.pem", P.dir);
	P.key = make_key();
	P.cert = make_cert(HOST, HOST, P.key, NULL, P.key, -DAY, 365 * DAY);
	f = fopen(P.ca_file, "w");
	if (!f)
		return -1;
	PEM_write_X509(f, P.cert);
	fclose(f);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	test_rmtree(P.dir);
	X509_free(P.cert);
	EVP_PKEY_free(P.key);
	return 0;
}

/* Deterministic bytes of every value, different at every offset. */
static unsigned char *payload(size_t len)
{
	unsigned char *p = malloc(len ? len : 1);
	uint64_t x = 0x9E3779B97F4A7C15ull;
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)(x >> 24);
	}
	return p;
}

static void sha256_hex(const void *buf, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;
	int i;

	assert_int_equal(EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL), 1);
	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- the peer: a blocking OpenSSL server in its own thread ---- */

enum peer_mode { PEER_READ_SLOWLY, PEER_SEND_BURST };

struct peer {
	enum peer_mode mode;
	bool tls;
	size_t expect;          /* READ_SLOWLY: plaintext bytes to read, then reply */
	int lfd;
	uint16_t port;
	pthread_t thread;
	/* results, read after join */
	size_t got;             /* bytes read (READ_SLOWLY: until the client closed) */
	char err[160];          /* "" = all went as planned */
};

static void peer_fail(struct peer *p, const char *what)
{
	if (p->err[0] == '\0')
		snprintf(p->err, sizeof(p->err), "%s (errno %d)", what, errno);
}

static int peer_read(struct peer *p, SSL *ssl, int fd, void *buf, int cap)
{
	if (p->tls)
		return SSL_read(ssl, buf, cap);
	return (int)recv(fd, buf, (size_t)cap, 0);
}

static int peer_write_all(struct peer *p, SSL *ssl, int fd, const void *buf, size_t len)
{
	if (p->tls)
		return SSL_write(ssl, buf, (int)len) == (int)len ? 0 : -1;
	return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Reads `expect` bytes in small pieces with pauses, answers with their
 * SHA-256 in hex, then counts whatever still comes until the client closes
 * (there must be nothing). */
static void peer_read_slowly(struct peer *p, SSL *ssl, int fd)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char buf[PEER_READ], dig[32];
	char reply[70];
	unsigned int n = 0;
	int reads = 0, i, r;

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		peer_fail(p, "digest");
		goto out;
	}
	while (p->got < p->expect) {
		size_t want = p->expect - p->got < sizeof(buf) ? p->expect - p->got : sizeof(buf);

		r = peer_read(p, ssl, fd, buf, (int)want);
		if (r <= 0) {
			peer_fail(p, "connection ended before all bytes came");
			goto out;
		}
		p->got += (size_t)r;
		EVP_DigestUpdate(md, buf, (size_t)r);
		if (++reads % PEER_PAUSE_EVERY == 0)
			usleep(PEER_PAUSE_US);
	}
	EVP_DigestFinal_ex(md, dig, &n);
	for (i = 0; i < 32; i++)
		snprintf(reply + 2 * i, 3, "%02x", dig[i]);
	memcpy(reply + 64, "\r\n", 3);
	if (peer_write_all(p, ssl, fd, reply, 66) != 0) {
		peer_fail(p, "cannot send the digest");
		goto out;
	}
	while ((r = peer_read(p, ssl, fd, buf, sizeof(buf))) > 0)
		p->got += (size_t)r;  /* more than expected: reported by the test */
out:
	EVP_MD_CTX_free(md);
}

/* Waits for the client's "GO", then sends BURST_RECORDS lines as one TLS
 * record each, corked so that they leave together, and then only waits. */
static void peer_send_burst(struct peer *p, SSL *ssl, int fd)
{
	char line[64], buf[256];
	int on = 1, off = 0, i, r;

	r = peer_read(p, ssl, fd, buf, sizeof(buf));
	if (r != 4 || memcmp(buf, "GO\r\n", 4) != 0) {
		peer_fail(p, "no GO from the client");
		return;
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) != 0) {
		peer_fail(p, "TCP_CORK");
		return;
	}
	for (i = 0; i < BURST_RECORDS; i++) {
		int n = snprintf(line, sizeof(line), "250%c2.1.5 record %03d\r\n",
				 i + 1 < BURST_RECORDS ? '-' : ' ', i);

		if (peer_write_all(p, ssl, fd, line, (size_t)n) != 0) {
			peer_fail(p, "cannot send a record");
			return;
		}
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof(off)) != 0) {
		peer_fail(p, "TCP_CORK off");
		return;
	}
	while (peer_read(p, ssl, fd, buf, sizeof(buf)) > 0)
		;
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	struct pollfd pfd = { .fd = p->lfd, .events = POLLIN };
	struct timeval tv = { .tv_sec = PEER_IO_TIMEOUT_S };
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	int fd = -1;

	if (poll(&pfd, 1, PEER_IO_TIMEOUT_S * 1000) != 1 || (fd = accept(p->lfd, NULL, NULL)) < 0) {
		peer_fail(p, "no connection");
		goto out;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		peer_fail(p, "socket timeouts");
		goto out;
	}
	if (p->tls) {
		ctx = SSL_CTX_new(TLS_server_method());
		if (ctx == NULL || SSL_CTX_use_certificate(ctx, P.cert) != 1 ||
		    SSL_CTX_use_PrivateKey(ctx, P.key) != 1 || (ssl = SSL_new(ctx)) == NULL ||
		    SSL_set_fd(ssl, fd) != 1) {
			peer_fail(p, "server TLS setup");
			goto out;
		}
		if (SSL_accept(ssl) != 1) {
			peer_fail(p, "TLS handshake");
			goto out;
		}
	}
	if (p->mode == PEER_READ_SLOWLY)
		peer_read_slowly(p, ssl, fd);
	else
		peer_send_burst(p, ssl, fd);
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	ERR_clear_error();
	return NULL;
}

/* Listens on 127.0.0.1 with a small receive window (set before listen() so
 * that the connection starts with it) and starts the peer thread. */
static void peer_start(struct peer *p)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int rcvbuf = PEER_RCVBUF;

	p->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(p->lfd >= 0);
	assert_int_equal(setsockopt(p->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(p->lfd, 1), 0);
	assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&a, &alen), 0);
	p->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_join(struct peer *p)
{
	assert_int_equal(pthread_join(p->thread, NULL), 0);
	close(p->lfd);
}

/* ---- the client: smtp_conn on a libuv loop ---- */

struct client {
	uv_loop_t loop;
	struct smtp_conn *c;
	struct smtp_tls_ctx *tls;         /* NULL: plaintext */
	enum peer_mode mode;
	/* writes: the payload in pieces, one smtp_conn_write() series per piece */
	const unsigned char *data;
	size_t pieces[MAX_PIECES], npieces, piece, off;  /* off: taken of pieces[piece] */
	size_t done;                      /* bytes taken in all */
	ssize_t first_take[MAX_PIECES];   /* what the first write of each piece took */
	int writes;
	/* reads */
	char in[16384];
	size_t inlen;
	int lines, data_calls;
	bool timed_out, eof, closed, tls_up;
	char err[160];
};

static void client_fail(struct client *cl, const char *what)
{
	if (cl->err[0] == '\0')
		snprintf(cl->err, sizeof(cl->err), "%s", what);
	smtp_conn_close(cl->c);
}

/* Offers the rest of the payload; stops when a write took less than it was
 * offered (the `drained` callback comes back here). Nothing goes before
 * the handshake is over (`drained` also follows the handshake's writes). */
static void pump(struct client *cl)
{
	if (cl->tls != NULL && !cl->tls_up)
		return;
	while (cl->piece < cl->npieces) {
		size_t start = 0, i, rest = cl->pieces[cl->piece] - cl->off;
		ssize_t took;

		for (i = 0; i < cl->piece; i++)
			start += cl->pieces[i];
		took = smtp_conn_write(cl->c, cl->data + start + cl->off, rest);
		if (took < 0 || (size_t)took > rest) {
			client_fail(cl, "smtp_conn_write failed");
			return;
		}
		if (cl->off == 0)
			cl->first_take[cl->piece] = took;
		cl->writes++;
		cl->off += (size_t)took;
		cl->done += (size_t)took;
		if ((size_t)took < rest)
			return;
		cl->piece++;
		cl->off = 0;
	}
}

static void on_connected(struct smtp_conn *c, void *arg)
{
	struct client *cl = arg;

	smtp_conn_timer(c, WATCHDOG_MS);
	if (cl->tls == NULL) {
		pump(cl);
		return;
	}
	if (smtp_conn_start_tls(c, cl->tls, true, NULL) != 0)
		client_fail(cl, "cannot start TLS");
}

static void on_tls_done(struct smtp_conn *c, void *arg, bool ok)
{
	struct client *cl = arg;

	if (!ok) {
		client_fail(cl, smtp_conn_info(c)->tls_reason);
		return;
	}
	cl->tls_up = true;
	if (cl->mode == PEER_READ_SLOWLY) {
		pump(cl);
		return;
	}
	if (smtp_conn_write(c, "GO\r\n", 4) != 4) {
		client_fail(cl, "cannot write GO");
		return;
	}
	smtp_conn_timer(c, BURST_TIMER_MS);
}

static void on_data(struct smtp_conn *c, void *arg, const char *buf, size_t len)
{
	struct client *cl = arg;
	size_t i;

	(void)c;
	cl->data_calls++;
	for (i = 0; i < len; i++)
		cl->lines += buf[i] == '\n';
	if (cl->inlen + len > sizeof(cl->in)) {
		if (cl->mode == PEER_READ_SLOWLY) {
			client_fail(cl, "the peer said too much");
			return;
		}
		cl->inlen = 0;  /* the burst: only the line count matters */
	}
	memcpy(cl->in + cl->inlen, buf, len);
	cl->inlen += len;
	if (cl->mode == PEER_READ_SLOWLY ? cl->lines == 1 : cl->lines == BURST_RECORDS)
		smtp_conn_close(c);
}

static void on_eof(struct smtp_conn *c, void *arg)
{
	struct client *cl = arg;

	(void)c;
	cl->eof = true;
	client_fail(cl, "the peer closed");
}

static void on_timeout(struct smtp_conn *c, void *arg)
{
	struct client *cl = arg;

	(void)c;
	cl->timed_out = true;
	client_fail(cl, "timer fired");
}

static void on_drained(struct smtp_conn *c, void *arg)
{
	(void)c;
	pump(arg);
}

static void on_closed(struct smtp_conn *c, void *arg)
{
	struct client *cl = arg;

	(void)c;
	cl->closed = true;
}

static const struct smtp_conn_ops client_ops = {
	.connected = on_connected,
	.data = on_data,
	.eof = on_eof,
	.timeout = on_timeout,
	.tls_done = on_tls_done,
	.drained = on_drained,
	.closed = on_closed,
};

/* Connects a client to the peer and runs the loop until the connection is
 * closed; cl->err says what went wrong in a callback. */
static void run_client(struct client *cl, struct peer *p)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	char err[256];

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(uv_loop_init(&cl->loop), 0);
	if (p->tls) {
		cl->tls = smtp_tls_ctx_new(P.ca_file, err, sizeof(err));
		if (cl->tls == NULL)
			fail_msg("smtp_tls_ctx_new: %s", err);
	}
	cl->c = smtp_conn_new(&cl->loop, &client_ops, cl);
	assert_non_null(cl->c);
	assert_int_equal(smtp_conn_connect(cl->c, HOST, &ss, p->port, 5000), 0);
	assert_int_equal(uv_run(&cl->loop, UV_RUN_DEFAULT), 0);
	assert_true(cl->closed);
	smtp_conn_free(cl->c);
	smtp_tls_ctx_free(cl->tls);
	assert_int_equal(uv_loop_close(&cl->loop), 0);
}

/* The payload in `n` pieces, each offered by its own smtp_conn_write()
 * series (the next piece goes in while the last one is still being
 * written): the slow peer must read every byte, in order, and no more. */
static void write_and_check(bool tls, const size_t *sizes, size_t n, struct client *cl)
{
	struct peer p = { .mode = PEER_READ_SLOWLY, .tls = tls };
	char want[65];
	unsigned char *data;
	size_t total = 0, i;

	assert_true(n <= MAX_PIECES);
	memset(cl, 0, sizeof(*cl));
	for (i = 0; i < n; i++)
		total += cl->pieces[i] = sizes[i];
	cl->npieces = n;
	data = payload(total);
	cl->data = data;
	cl->mode = PEER_READ_SLOWLY;
	p.expect = total;
	peer_start(&p);
	run_client(cl, &p);
	peer_join(&p);
	sha256_hex(data, total, want);
	free(data);
	if (cl->err[0] || p.err[0])
		fail_msg("client: %s; peer: %s", cl->err, p.err);
	assert_int_equal(cl->done, total);
	assert_int_equal(p.got, total);   /* nothing more came after the payload */
	assert_int_equal(cl->inlen, 66);
	assert_memory_equal(cl->in, want, 64);
	assert_true(cl->tls_up == tls);
}

static void write_one(size_t size)
{
	struct client cl;

	write_and_check(true, &size, 1, &cl);
	/* No buffer was full: the first write took it all. */
	assert_int_equal(cl.first_take[0], (ssize_t)size);
	assert_int_equal(cl.writes, 1);
}

static void test_write_16383(void **state)
{
	(void)state;
	write_one(16383);
}

static void test_write_16384(void **state)
{
	(void)state;
	write_one(16384);
}

static void test_write_16385(void **state)
{
	(void)state;
	write_one(16385);
}

static void test_write_65536(void **state)
{
	(void)state;
	write_one(65536);
}

/* 1 MB of plaintext is more ciphertext than SMTP_CONN_OUT_MAX holds: taken
 * in parts, and every part counted. */
static void test_write_1mb(void **state)
{
	size_t size = 1024 * 1024;
	struct client cl;

	(void)state;
	write_and_check(true, &size, 1, &cl);
	assert_true(cl.first_take[0] > 0 && cl.first_take[0] < (ssize_t)size);
	assert_true(cl.writes >= 2);
}

static void test_write_over_out_max(void **state)
{
	size_t size = SMTP_CONN_OUT_MAX + SMTP_CONN_OUT_MAX / 2 + 7;
	struct client cl;

	(void)state;
	write_and_check(true, &size, 1, &cl);
	assert_true(cl.first_take[0] > 0 && cl.first_take[0] <= SMTP_CONN_OUT_MAX);
	assert_true(cl.writes >= 2);
}

/* Each boundary size after the other on one connection, each offered while
 * the one before may still be on its way. */
static void test_writes_in_sequence(void **state)
{
	const size_t sizes[] = { 16383, 16384, 16385, 65536, 1024 * 1024, 1, 16384 };
	struct client cl;

	(void)state;
	write_and_check(true, sizes, sizeof(sizes) / sizeof(sizes[0]), &cl);
}

/* The plaintext path has the same bound and the same count. */
static void test_plain_write_over_out_max(void **state)
{
	size_t size = SMTP_CONN_OUT_MAX + SMTP_CONN_OUT_MAX / 2 + 7;
	struct client cl;

	(void)state;
	write_and_check(false, &size, 1, &cl);
	assert_int_equal(cl.first_take[0], SMTP_CONN_OUT_MAX);
}

/* 500 records in one burst (one read holds them all): every line reaches the
 * data callback at once, with the timer never firing. */
static void test_record_burst(void **state)
{
	struct peer p = { .mode = PEER_SEND_BURST, .tls = true };
	struct client cl;
	struct timespec t0, t1;
	double secs;

	(void)state;
	memset(&cl, 0, sizeof(cl));
	cl.mode = PEER_SEND_BURST;
	peer_start(&p);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_client(&cl, &p);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	peer_join(&p);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (cl.err[0] || p.err[0])
		fail_msg("client: %s; peer: %s (%d lines)", cl.err, p.err, cl.lines);
	assert_false(cl.timed_out);
	assert_int_equal(cl.lines, BURST_RECORDS);
	assert_true(secs < BURST_TIMER_MS / 1000.0 / 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_16383),
		cmocka_unit_test(test_write_16384),
		cmocka_unit_test(test_write_16385),
		cmocka_unit_test(test_write_65536),
		cmocka_unit_test(test_write_1mb),
		cmocka_unit_test(test_write_over_out_max),
		cmocka_unit_test(test_writes_in_sequence),
		cmocka_unit_test(test_plain_write_over_out_max),
		cmocka_unit_test(test_record_burst),
	};

	/* As the daemon: a peer that is gone is an error code, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
