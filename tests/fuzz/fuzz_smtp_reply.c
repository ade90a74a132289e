/* Fuzzes the SMTP reply parser (split at arbitrary points) and EHLO parsing,
 * and drives the client state machine with the same bytes as server input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/client.h"
#include "smtp/reply.h"

static struct smtp_reply_parser parser;

static void check_reply(const struct smtp_reply *r)
{
	struct smtp_ehlo_caps caps;
	char sum[128];

	if (r->code < 200 || r->code > 559 || r->nlines == 0 || r->textlen > SMTP_REPLY_MAX ||
	    strlen(r->text) != r->textlen || strlen(r->esc) >= SMTP_REPLY_ESC_MAX)
		abort();
	if (r->esc[0] && r->esc[0] != (char)('0' + r->code / 100))
		abort();
	smtp_ehlo_parse(r, &caps);
	smtp_reply_summary(r, sum, sizeof(sum));
	if (strlen(sum) >= sizeof(sum))
		abort();
}

/* First byte: chunk size for feeding; the rest: the server's bytes. */
static void parse_all(const uint8_t *data, size_t size)
{
	size_t chunk = size ? (size_t)data[0] % 64 + 1 : 1, off = 1;

	smtp_reply_parser_init(&parser);
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;

		while (n > 0) {
			const char *err = NULL;
			size_t used = 0;
			int rc = smtp_reply_feed(&parser, (const char *)data + off, n, &used, &err);

			if (used > n)
				abort();
			off += used;
			n -= used;
			if (rc < 0) {
				if (!err)
					abort();
				return;
			}
			if (rc == 1)
				check_reply(&parser.reply);
			else if (n != 0)
				abort();  /* 0 means everything was consumed */
		}
	}
}

static ssize_t read_msg(void *arg, char *buf, size_t cap)
{
	int *left = arg;
	static const char msg[] = "Subject: x\r\n\r\n.dot\r\nbody";

	if (*left <= 0)
		return 0;
	(*left)--;
	if (cap > sizeof(msg) - 1)
		cap = sizeof(msg) - 1;
	memcpy(buf, msg, cap);
	return (ssize_t)cap;
}

static void drive_client(const uint8_t *data, size_t size)
{
	static const char *rcpts[] = {"a@example.com", "b@example.com"};
	struct smtp_client_config cfg = {0};
	struct smtp_client *c;
	const struct smtp_client_result *res;
	size_t off = 1, i;
	int left = 3, steps;

	cfg.helo_name = "relay.example.org";
	cfg.peer = "mx[192.0.2.1]";
	cfg.sender = "s@example.org";
	cfg.rcpts = rcpts;
	cfg.nrcpts = 2;
	cfg.size = 100;
	cfg.tls = size ? (enum smtp_tls_level)(data[0] % 3) : SMTP_TLS_MAY;
	cfg.read = read_msg;
	cfg.read_arg = &left;
	c = smtp_client_new(&cfg, NULL);
	if (!c)
		abort();
	for (steps = 0; steps < 10000 && off < size; steps++) {
		size_t n = size - off < 17 ? size - off : 17;
		const char *p;
		size_t len;
		enum smtp_client_event ev = smtp_client_event(c);

		smtp_client_output(c, &p, &len);
		/* Fail closed: never a transaction without TLS under REQUIRE. */
		if (cfg.tls == SMTP_TLS_REQUIRE && !smtp_client_result(c)->tls_active &&
		    len >= 4 && (memmem(p, len, "MAIL", 4) || memmem(p, len, "RCPT", 4)))
			abort();
		smtp_client_consume(c, len);
		if (ev == SMTP_CLIENT_EV_DONE)
			break;
		if (ev == SMTP_CLIENT_EV_NEED_TLS) {
			smtp_client_tls_done(c, data[off] & 1, "fuzz");
			off++;
			continue;
		}
		smtp_client_feed(c, (const char *)data + off, n);
		off += n;
	}
	smtp_client_eof(c);
	if (smtp_client_event(c) != SMTP_CLIENT_EV_DONE)
		abort();
	res = smtp_client_result(c);
	for (i = 0; i < res->nrcpts; i++)
		if (res->rcpts[i].status == SMTP_RCPT_PENDING)
			abort();  /* a finished session leaves no recipient undecided */
	smtp_client_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse_all(data, size);
	drive_client(data, size);
	return 0;
}
