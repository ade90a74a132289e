/* DNS answer messages read by relay/net/dns_msg.c, built byte by byte here:
 * header bits (AD, RCODE), compressed names, CNAME chains (in any order,
 * looping, too long), TLSA records at the end of the chain, malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "relay/net/dns_msg.h"

struct msg {
	unsigned char b[4096];
	size_t n;
	unsigned ancount;
};

static void put(struct msg *m, const void *p, size_t n)
{
	assert_true(m->n + n <= sizeof(m->b));
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void put16(struct msg *m, unsigned v)
{
	unsigned char x[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	put(m, x, 2);
}

/* "a.b.c" in wire form */
static void put_name(struct msg *m, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		unsigned char lb = (unsigned char)l;

		put(m, &lb, 1);
		put(m, name, l);
		name += l + (dot != NULL);
	}
	put(m, "", 1);
}

static void start(struct msg *m, const char *qname, unsigned qtype, bool ad, unsigned rcode)
{
	memset(m, 0, sizeof(*m));
	put16(m, 0x1234);
	put16(m, 0x8180 | (ad ? 0x20 : 0) | rcode);
	put16(m, 1);
	put16(m, 0); /* ancount, set by finish */
	put16(m, 0);
	put16(m, 0);
	put_name(m, qname);
	put16(m, qtype);
	put16(m, 1);
}

static void rr_head(struct msg *m, const char *owner, unsigned type, size_t rdlen)
{
	put_name(m, owner);
	put16(m, type);
	put16(m, 1);
	put16(m, 0);
	put16(m, 300);
	put16(m, (unsigned)rdlen);
	m->ancount++;
}

static void cname(struct msg *m, const char *owner, const char *target)
{
	struct msg t = { .n = 0 };

	put_name(&t, target);
	rr_head(m, owner, DNS_MSG_TYPE_CNAME, t.n);
	put(m, t.b, t.n);
}

static void tlsa(struct msg *m, const char *owner, unsigned char u, size_t dlen)
{
	unsigned char d[70] = { u, 1, 1 };

	memset(d + 3, 0x11, dlen);
	rr_head(m, owner, DNS_MSG_TYPE_TLSA, 3 + dlen);
	put(m, d, 3 + dlen);
}

static void finish(struct msg *m)
{
	m->b[6] = (unsigned char)(m->ancount >> 8);
	m->b[7] = (unsigned char)m->ancount;
}

static void test_tlsa_plain(void **state)
{
	struct msg m;
	struct dns_msg_info info;
	struct smtp_tlsa_set set;
	size_t bad;
	const char *why;

	(void)state;
	start(&m, "_25._tcp.MX.example.com", DNS_MSG_TYPE_TLSA, true, 0);
	tlsa(&m, "_25._tcp.mx.example.com", 3, 32);
	tlsa(&m, "_25._tcp.mx.example.com", 2, 64);
	tlsa(&m, "_25._tcp.other.example.com", 3, 32); /* not ours */
	finish(&m);
	assert_int_equal(dns_msg_tlsa(m.b, m.n, &info, &set, &bad, &why), 0);
	assert_true(info.ad);
	assert_int_equal(info.rcode, 0);
	assert_false(info.cname);
	assert_string_equal(info.qname, "_25._tcp.mx.example.com");
	assert_int_equal(set.n, 2);
	assert_int_equal(set.rec[0].usage, 3);
	assert_int_equal(set.rec[1].len, 64);
	assert_int_equal(bad, 0);
}

static void test_tlsa_cname_chain_out_of_order(void **state)
{
	struct msg m;
	struct dns_msg_info info;
	struct smtp_tlsa_set set;
	size_t bad;
	const char *why;

	(void)state;
	start(&m, "_25._tcp.a.example", DNS_MSG_TYPE_TLSA, false, 0);
	tlsa(&m, "_25._tcp.c.example", 3, 32);
	cname(&m, "_25._tcp.b.example", "_25._tcp.c.example");
	cname(&m, "_25._tcp.a.example", "_25._tcp.b.example");
	tlsa(&m, "_25._tcp.a.example", 3, 32); /* beside a CNAME: not the chain's end */
	finish(&m);
	assert_int_equal(dns_msg_tlsa(m.b, m.n, &info, &set, &bad, &why), 0);
	assert_false(info.ad);
	assert_true(info.cname);
	assert_string_equal(info.target, "_25._tcp.c.example");
	assert_int_equal(set.n, 1);
}

static void test_cname_loop_and_length(void **state)
{
	struct msg m;
	struct dns_msg_info info;
	const char *why;
	char a[16], b[16];

	(void)state;
	start(&m, "a.example", DNS_MSG_TYPE_A, false, 0);
	cname(&m, "a.example", "b.example");
	cname(&m, "b.example", "a.example");
	finish(&m);
	assert_int_equal(dns_msg_read(m.b, m.n, DNS_MSG_TYPE_A, &info, NULL, NULL, &why), 0);
	/* a chain longer than DNS_MSG_CHAIN_MAX stops where it stands */
	start(&m, "h0.example", DNS_MSG_TYPE_A, false, 0);
	for (int i = 0; i < DNS_MSG_CHAIN_MAX + 3; i++) {
		snprintf(a, sizeof(a), "h%d.example", i);
		snprintf(b, sizeof(b), "h%d.example", i + 1);
		cname(&m, a, b);
	}
	finish(&m);
	assert_int_equal(dns_msg_read(m.b, m.n, DNS_MSG_TYPE_A, &info, NULL, NULL, &why), 0);
	snprintf(a, sizeof(a), "h%d.example", DNS_MSG_CHAIN_MAX);
	assert_string_equal(info.target, a);
}

static void test_compression_and_rcode(void **state)
{
	struct msg m;
	struct dns_msg_info info;
	struct smtp_tlsa_set set;
	size_t bad;
	const char *why;
	unsigned char ptr[2] = { 0xc0, 12 }; /* the question name */

	(void)state;
	start(&m, "_25._tcp.mx.example", DNS_MSG_TYPE_TLSA, true, 3);
	finish(&m);
	assert_int_equal(dns_msg_tlsa(m.b, m.n, &info, &set, &bad, &why), 0);
	assert_int_equal(info.rcode, 3);
	assert_int_equal(set.n, 0);
	/* an owner given as a pointer to the question */
	start(&m, "_25._tcp.mx.example", DNS_MSG_TYPE_TLSA, true, 0);
	put(&m, ptr, 2);
	put16(&m, DNS_MSG_TYPE_TLSA);
	put16(&m, 1);
	put16(&m, 0);
	put16(&m, 60);
	put16(&m, 3 + 32);
	put(&m, (unsigned char[35]){ 3, 1, 1 }, 35);
	m.ancount++;
	/* an empty RDATA is no TLSA record: counted as bad, not taken */
	rr_head(&m, "_25._tcp.mx.example", DNS_MSG_TYPE_TLSA, 0);
	finish(&m);
	assert_int_equal(dns_msg_tlsa(m.b, m.n, &info, &set, &bad, &why), 0);
	assert_int_equal(set.n, 1);
	assert_int_equal(bad, 1);
}

static void test_malformed(void **state)
{
	struct msg m;
	struct dns_msg_info info;
	struct smtp_tlsa_set set;
	size_t bad;
	const char *why;
	unsigned char loop[2] = { 0xc0, 30 };

	(void)state;
	/* shorter than a header, two questions, a truncated answer */
	assert_int_equal(dns_msg_tlsa(m.b, 5, &info, &set, &bad, &why), -1);
	start(&m, "x.example", DNS_MSG_TYPE_TLSA, true, 0);
	m.b[5] = 2;
	assert_int_equal(dns_msg_tlsa(m.b, m.n, &info, &set, &bad, &why), -1);
	start(&m, "x.example", DNS_MSG_TYPE_TLSA, true, 0);
	tlsa(&m, "x.example", 3, 32);
	finish(&m);
	assert_int_equal(dns_msg_tlsa(m.b, m.n - 1, &info, &set, &bad, &why), -1);
	assert_int_equal(set.n, 0);
	/* a compression pointer to itself */
	start(&m, "x.example", DNS_MSG_TYPE_TLSA, true, 0);
	assert_int_equal(m.n, 27);
	m.n = 30;
	put(&m, loop, 2);
	m.ancount = 1;
	finish(&m);
	assert_int_equal(dns_msg_tlsa(m.b, m.n, &info, &set, &bad, &why), -1);
	assert_string_equal(why, "malformed DNS message");
}

/* 253 characters is the longest name (255 octets on the wire with the
 * root's zero); one more is a malformed message, never a cut name. */
static void test_name_length(void **state)
{
	struct msg m;
	struct dns_msg_info info;
	const char *why;
	char name[260];

	(void)state;
	for (int extra = 0; extra < 2; extra++) {
		memset(name, 'a', sizeof(name));
		name[63] = name[127] = name[191] = '.';
		name[253 + extra] = '\0';
		start(&m, name, DNS_MSG_TYPE_A, false, 0);
		finish(&m);
		if (extra == 0) {
			assert_int_equal(
				dns_msg_read(m.b, m.n, DNS_MSG_TYPE_A, &info, NULL, NULL, &why), 0);
			assert_int_equal(strlen(info.qname), 253);
		} else {
			assert_int_equal(
				dns_msg_read(m.b, m.n, DNS_MSG_TYPE_A, &info, NULL, NULL, &why),
				-1);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tlsa_plain),
		cmocka_unit_test(test_tlsa_cname_chain_out_of_order),
		cmocka_unit_test(test_cname_loop_and_length),
		cmocka_unit_test(test_compression_and_rcode),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_name_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
