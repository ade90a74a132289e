/* Table tests for smtp/address.c: the RFC 5321 syntax the listener and
 * sendmail accept, the shared "can the client send it" rule, and proof that
 * the client (smtp_client_new) takes exactly what that rule allows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "smtp/address.h"
#include "smtp/client.h"

struct addr_case {
	const char *addr;
	int valid;              /* smtp_address_valid(): 0 or -1 */
	bool sendable_rcpt;     /* smtp_address_sendable(addr, false) */
	bool sendable_sender;   /* smtp_address_sendable(addr, true) */
	const char *why;        /* reason when not sendable as a recipient */
};

static const struct addr_case cases[] = {
	{ "user@example.com", 0, true, true, NULL },
	{ "A.B+c@Sub.Example.COM", 0, true, true, NULL },
	{ "\"john doe\"@example.com", 0, true, true, NULL },
	{ "\"quoted\\\"x\"@example.com", 0, true, true, NULL },
	{ "a@[192.0.2.1]", 0, true, true, NULL },
	{ "a@[IPv6:2001:db8::1]", 0, true, true, NULL },
	/* RFC-valid quoted strings the client will not put between <>. */
	{ "\"a>b\"@example.com", -1, false, false, "'<' or '>' in address" },
	{ "\"a<b\"@example.com", -1, false, false, "'<' or '>' in address" },
	{ "\"a\\>b\"@example.com", -1, false, false, "'<' or '>' in address" },
	{ "\"x@evil.example> NOTIFY=NEVER\"@example.com", -1, false, false,
	  "'<' or '>' in address" },
	/* control characters never go out */
	{ "a\rb@example.com", -1, false, false, "control character in address" },
	{ "a\nb@example.com", -1, false, false, "control character in address" },
	{ "a\tb@example.com", -1, false, false, "control character in address" },
	{ "a\x7f@example.com", -1, false, false, "control character in address" },
	{ "\"a\x01\"@example.com", -1, false, false, "control character in address" },
	/* 8-bit: the client can send it (with SMTPUTF8), the listener does not
	 * accept it (no SMTPUTF8 at submission) */
	{ "b\xc3\xb8" "b@example.com", -1, true, true, NULL },
	{ "bob@\xc3\xa9xample.com", -1, true, true, NULL },
	/* the null sender is a sender only */
	{ "", -1, false, true, "empty address" },
	/* not RFC syntax, but nothing that breaks a command line: the server
	 * judges it (a 5xx to that RCPT alone) */
	{ "nodomain", -1, true, true, NULL },
	{ "a b@example.com", -1, true, true, NULL },
	{ "user@example.com.", -1, true, true, NULL },
	{ "user@", -1, true, true, NULL },
	{ "@example.com", -1, true, true, NULL },
	{ "user@[IPv6:zz]", -1, true, true, NULL },
	{ "a..b@example.com", -1, true, true, NULL },
};

/* Does the client take addr as the sender (is_sender) or as the only
 * recipient? */
static bool client_takes(const char *addr, bool is_sender)
{
	struct smtp_client_config cfg;
	const char *rcpt = is_sender ? "bob@example.com" : addr;
	struct smtp_client *c;
	const char *err = NULL;

	memset(&cfg, 0, sizeof(cfg));
	cfg.helo_name = "relay.example.org";
	cfg.sender = is_sender ? addr : "alice@example.org";
	cfg.rcpts = &rcpt;
	cfg.nrcpts = 1;
	c = smtp_client_new(&cfg, &err);
	if (c == NULL) {
		assert_non_null(err);
		return false;
	}
	smtp_client_free(c);
	return true;
}

static void test_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct addr_case *c = &cases[i];
		const char *why = NULL;
		bool r = smtp_address_sendable(c->addr, false, &why);

		if (smtp_address_valid(c->addr) != c->valid)
			fail_msg("case %zu '%s': valid %d, want %d", i, c->addr,
				 smtp_address_valid(c->addr), c->valid);
		if (r != c->sendable_rcpt)
			fail_msg("case %zu '%s': sendable as recipient %d, want %d", i, c->addr, r,
				 c->sendable_rcpt);
		if (!r && (why == NULL || strcmp(why, c->why) != 0))
			fail_msg("case %zu '%s': reason '%s', want '%s'", i, c->addr,
				 why ? why : "(null)", c->why);
		if (smtp_address_sendable(c->addr, true, NULL) != c->sendable_sender)
			fail_msg("case %zu '%s': sendable as sender, want %d", i, c->addr,
				 c->sendable_sender);
		/* The two ends cannot disagree: what the listener accepts the
		 * client sends, and the client takes exactly the sendable ones. */
		if (c->valid == 0 && !c->sendable_rcpt)
			fail_msg("case %zu '%s': valid but not sendable", i, c->addr);
		if (client_takes(c->addr, false) != c->sendable_rcpt)
			fail_msg("case %zu '%s': client as recipient disagrees", i, c->addr);
		if (client_takes(c->addr, true) != c->sendable_sender)
			fail_msg("case %zu '%s': client as sender disagrees", i, c->addr);
	}
	assert_false(smtp_address_sendable(NULL, true, NULL));
}

/* 511 octets go out, 512 do not, at both ends of the client. */
static void test_length(void **state)
{
	char addr[SMTP_ADDRESS_SEND_MAX + 2];
	const char *why = NULL;

	(void)state;
	memset(addr, 'a', sizeof(addr));
	memcpy(addr + SMTP_ADDRESS_SEND_MAX - 12, "@example.com", 12);
	addr[SMTP_ADDRESS_SEND_MAX] = '\0';
	assert_true(smtp_address_sendable(addr, false, NULL));
	assert_true(client_takes(addr, false));
	assert_true(client_takes(addr, true));
	/* over SMTP_PATH_MAX: the listener refuses it anyway */
	assert_int_equal(smtp_address_valid(addr), -1);

	memset(addr, 'a', sizeof(addr));
	memcpy(addr + SMTP_ADDRESS_SEND_MAX + 1 - 12, "@example.com", 12);
	addr[SMTP_ADDRESS_SEND_MAX + 1] = '\0';
	assert_false(smtp_address_sendable(addr, false, &why));
	assert_string_equal(why, "address longer than 511 octets");
	assert_false(client_takes(addr, false));
	assert_false(client_takes(addr, true));
}

/* The longest sendable sender and recipient, with every MAIL parameter
 * (SIZE, BODY=8BITMIME, SMTPUTF8), are written out whole. */
static void test_longest_commands(void **state)
{
	char sender[SMTP_ADDRESS_SEND_MAX + 1], rcpt[SMTP_ADDRESS_SEND_MAX + 1];
	char want[2 * SMTP_ADDRESS_SEND_MAX + 200];
	const char *rcpts[1] = { rcpt };
	const char *ehlo = "220 mx ESMTP\r\n";
	const char *caps = "250-mx\r\n250-SIZE 0\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
			   "250 PIPELINING\r\n";
	struct smtp_client_config cfg;
	struct smtp_client *c;
	const char *out;
	size_t len;

	(void)state;
	/* an 8-bit byte in the sender asks for SMTPUTF8 */
	memset(sender, 's', sizeof(sender));
	memcpy(sender, "\xc3\xa9", 2);
	memcpy(sender + SMTP_ADDRESS_SEND_MAX - 12, "@example.org", 12);
	sender[SMTP_ADDRESS_SEND_MAX] = '\0';
	memset(rcpt, 'r', sizeof(rcpt));
	memcpy(rcpt + SMTP_ADDRESS_SEND_MAX - 12, "@example.com", 12);
	rcpt[SMTP_ADDRESS_SEND_MAX] = '\0';

	memset(&cfg, 0, sizeof(cfg));
	cfg.helo_name = "relay.example.org";
	cfg.sender = sender;
	cfg.rcpts = rcpts;
	cfg.nrcpts = 1;
	cfg.size = UINT64_MAX;
	cfg.eight_bit = true;
	c = smtp_client_new(&cfg, NULL);
	assert_non_null(c);
	assert_int_equal(smtp_client_feed(c, ehlo, strlen(ehlo)), 0);
	smtp_client_output(c, &out, &len);
	smtp_client_consume(c, len);
	assert_int_equal(smtp_client_feed(c, caps, strlen(caps)), 0);
	smtp_client_output(c, &out, &len);
	snprintf(want, sizeof(want),
		 "MAIL FROM:<%s> SIZE=18446744073709551615 BODY=8BITMIME SMTPUTF8\r\n"
		 "RCPT TO:<%s>\r\nDATA\r\n",
		 sender, rcpt);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(out, want, len);
	assert_int_equal(smtp_client_result(c)->outcome, SMTP_CONN_OK);
	smtp_client_free(c);
}

static void test_domain(void **state)
{
	(void)state;
	assert_string_equal(smtp_address_domain("a@b@c.example"), "c.example");
	assert_null(smtp_address_domain("nodomain"));
	assert_null(smtp_address_domain(NULL));
}

/* alias_root: which recipients are local, and what becomes of them. */
static void test_local(void **state)
{
	static const struct {
		const char *addr, *alias;
		enum smtp_local_result want;
	} cases[] = {
		{ "root", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "www-data", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "Postmaster", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "root@relay.example", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "ROOT@Relay.Example.", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "mailer-daemon@relay.example", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "abuse@relay.example", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "anyone@localhost", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		{ "anyone@LOCALHOST.", "admin@example.org", SMTP_LOCAL_REWRITTEN },
		/* a user at hostname may be a real mailbox elsewhere */
		{ "bob@relay.example", "admin@example.org", SMTP_NOT_LOCAL },
		{ "root@example.org", "admin@example.org", SMTP_NOT_LOCAL },
		{ "root@sub.relay.example", "admin@example.org", SMTP_NOT_LOCAL },
		{ "rooty@relay.example", "admin@example.org", SMTP_NOT_LOCAL },
		{ "root@localhost.example", "admin@example.org", SMTP_NOT_LOCAL },
		/* no alias, or one that is not an address: refused */
		{ "root", "", SMTP_LOCAL_REFUSED },
		{ "root@relay.example", NULL, SMTP_LOCAL_REFUSED },
		{ "postmaster", "not an address", SMTP_LOCAL_REFUSED },
		{ "bob@relay.example", "", SMTP_NOT_LOCAL },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64] = "untouched";
		enum smtp_local_result r =
		    smtp_address_local(cases[i].addr, "relay.example", cases[i].alias, out, sizeof(out));

		if (r != cases[i].want)
			fail_msg("%s: got %d, want %d", cases[i].addr, (int)r, (int)cases[i].want);
		assert_string_equal(out, r == SMTP_LOCAL_REWRITTEN ? cases[i].alias : "untouched");
	}
	/* an alias that does not fit the caller's buffer is not cut */
	{
		char small[8] = "x";

		assert_int_equal(smtp_address_local("root", "h.example", "admin@example.org", small,
						    sizeof(small)),
				 SMTP_LOCAL_REFUSED);
		assert_string_equal(small, "x");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_length),
		cmocka_unit_test(test_longest_commands),
		cmocka_unit_test(test_domain),
		cmocka_unit_test(test_local),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
