/* Unit tests of base64 into a fixed buffer (relay/core/b64.h): RFC 4648
 * vectors both ways, all byte values, exact output sizes, refusal when too
 * small, and strict decoding (padding, alphabet, non-canonical bits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay/core/b64.h"

static void test_vectors(void **state)
{
	static const char *const in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const out[] = { "",         "Zg==",     "Zm8=",    "Zm9v",
					   "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char buf[16];
	size_t i;

	(void)state;
	for (i = 0; i < 7; i++) {
		assert_int_equal(core_b64_len(strlen(in[i])), strlen(out[i]));
		assert_int_equal(core_b64_encode(in[i], strlen(in[i]), buf, sizeof(buf)),
				 (ssize_t)strlen(out[i]));
		assert_string_equal(buf, out[i]);
	}
}

/* Every byte value, against a bit-by-bit reference encoder. */
static void test_all_bytes(void **state)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char in[256];
	char got[400], want[400];
	size_t i, bit, o = 0;

	(void)state;
	for (i = 0; i < 256; i++)
		in[i] = (unsigned char)(255 - i);
	for (bit = 0; bit < 256 * 8; bit += 6) {
		unsigned v = 0, k;

		for (k = 0; k < 6; k++) {
			size_t b = bit + k;
			unsigned set = b < 256 * 8 ? (in[b / 8] >> (7 - b % 8)) & 1 : 0;

			v = v << 1 | set;
		}
		want[o++] = alpha[v];
	}
	while (o % 4 != 0)
		want[o++] = '=';
	want[o] = '\0';
	assert_int_equal(core_b64_encode(in, sizeof(in), got, sizeof(got)), (ssize_t)o);
	assert_string_equal(got, want);
}

static void test_output_size(void **state)
{
	char buf[9];

	(void)state;
	memset(buf, 'x', sizeof(buf));
	/* "foobar" needs 8 characters and the NUL: 8 bytes are one too few */
	assert_int_equal(core_b64_encode("foobar", 6, buf, 8), -1);
	assert_int_equal(buf[0], 'x');                 /* nothing written */
	assert_int_equal(core_b64_encode("foobar", 6, buf, 9), 8);
	assert_string_equal(buf, "Zm9vYmFy");
	assert_int_equal(core_b64_encode("", 0, buf, 0), -1);
	assert_int_equal(core_b64_encode("", 0, buf, 1), 0);
	assert_string_equal(buf, "");
	/* a length whose encoding does not fit in size_t */
	assert_int_equal(core_b64_len(SIZE_MAX), SIZE_MAX);
	assert_int_equal(core_b64_encode(buf, SIZE_MAX, buf, sizeof(buf)), -1);
}

static void test_decode_vectors(void **state)
{
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const enc[] = { "",         "Zg==",     "Zm8=",    "Zm9v",
					   "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char buf[16];
	size_t i;

	(void)state;
	for (i = 0; i < 7; i++) {
		memset(buf, 0, sizeof(buf));
		assert_int_equal(core_b64_decode(enc[i], strlen(enc[i]), buf, sizeof(buf)),
				 (ssize_t)strlen(plain[i]));
		assert_memory_equal(buf, plain[i], strlen(plain[i]));
	}
}

/* Every byte value survives encode then decode; the output bound is exact. */
static void test_decode_round_trip(void **state)
{
	unsigned char in[256], out[256];
	char text[400];
	size_t n, i;

	(void)state;
	for (i = 0; i < 256; i++)
		in[i] = (unsigned char)i;
	for (n = 0; n <= 256; n += 1 + n / 3) {
		ssize_t len = core_b64_encode(in, n, text, sizeof(text));

		assert_true(len >= 0);
		assert_int_equal(core_b64_decode(text, (size_t)len, out, n), (ssize_t)n);
		assert_memory_equal(out, in, n);
		if (n > 0) /* one byte less room: refused */
			assert_int_equal(core_b64_decode(text, (size_t)len, out, n - 1), -1);
	}
}

/* What RFC 4648 §3 lets a decoder refuse, and SASL (RFC 4954 §4) wants
 * refused: anything but the canonical form. */
static void test_decode_rejects(void **state)
{
	static const char *const bad[] = {
		"Zg",       /* no padding */
		"Zg=",      /* short padding */
		"Z===",     /* three pads */
		"=Zg=",     /* pad first */
		"Zg=a",     /* data after a pad */
		"Zg==Zg==", /* padding inside */
		"Zh==",     /* non-zero bits after the last byte */
		"Zm9=",     /* same, one pad */
		"Zm 9v",    /* blank */
		"Zm9v\n",   /* line break */
		"Zm9-",     /* base64url alphabet */
		"Zm9_",
		"Zm9\x80",
		"====",
	};
	char buf[16];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (core_b64_decode(bad[i], strlen(bad[i]), buf, sizeof(buf)) != -1)
			fail_msg("decoded '%s'", bad[i]);
	/* a NUL inside is not the end of the text */
	assert_int_equal(core_b64_decode("Zg\0=", 4, buf, sizeof(buf)), -1);
}

/* %XX escapes: both cases of hex digits, every octet, and what is not one. */
static void test_pct_octet(void **state)
{
	static const struct {
		const char *in;
		size_t avail;
		int want;
	} rows[] = {
		{ .in = "%41", .avail = 3, .want = 0x41 },
		{ .in = "%fF", .avail = 3, .want = 0xff },
		{ .in = "%00", .avail = 3, .want = 0 },
		{ .in = "%2c@", .avail = 4, .want = ',' },
		{ .in = "%4", .avail = 2, .want = -1 },
		{ .in = "%41", .avail = 2, .want = -1 },
		{ .in = "%g1", .avail = 3, .want = -1 },
		{ .in = "%1 ", .avail = 3, .want = -1 },
		{ .in = "A41", .avail = 3, .want = -1 },
		{ .in = "", .avail = 0, .want = -1 },
	};
	char buf[4];
	size_t i;
	int v;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		assert_int_equal(core_pct_octet(rows[i].in, rows[i].avail), rows[i].want);
	for (v = 0; v < 256; v++) {
		assert_int_equal(snprintf(buf, sizeof(buf), "%%%02X", v), 3);
		assert_int_equal(core_pct_octet(buf, 3), v);
		assert_int_equal(snprintf(buf, sizeof(buf), "%%%02x", v), 3);
		assert_int_equal(core_pct_octet(buf, 3), v);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_all_bytes),
		cmocka_unit_test(test_output_size),
		cmocka_unit_test(test_decode_vectors),
		cmocka_unit_test(test_decode_round_trip),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_pct_octet),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
