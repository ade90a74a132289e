/* Unit tests of the bounded buffer (relay/core/buf.h): appends, the exact
 * ceiling, sticky errors, printf growth, base64 lines and ownership transfer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>

#include "relay/core/buf.h"

/* Under ASan a failed huge allocation must return NULL (the ENOMEM test),
 * not abort the process. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

static void test_empty(void **state)
{
	struct core_buf b;
	char *p;
	size_t len = 99;

	(void)state;
	core_buf_init(&b, 100);
	assert_string_equal(core_buf_str(&b), "");
	assert_int_equal(core_buf_len(&b), 0);
	assert_int_equal(core_buf_error(&b), 0);
	/* an empty buffer still hands over a string the caller can free */
	p = core_buf_take(&b, &len);
	assert_non_null(p);
	assert_string_equal(p, "");
	assert_int_equal(len, 0);
	free(p);
	core_buf_free(&b);
}

static void test_append_and_take(void **state)
{
	struct core_buf b = CORE_BUF_INIT(1000);
	char *p;
	size_t len;

	(void)state;
	assert_int_equal(core_buf_add(&b, "abc", 3), 0);
	assert_int_equal(core_buf_add(&b, "\0z", 2), 0);        /* bytes, NUL included */
	assert_int_equal(core_buf_adds(&b, "def"), 0);
	assert_int_equal(core_buf_printf(&b, "[%d-%s]", 42, "x"), 0);
	assert_int_equal(core_buf_add(&b, NULL, 0), 0);
	assert_int_equal(core_buf_len(&b), 14);
	assert_memory_equal(core_buf_str(&b), "abc\0zdef[42-x]", 15);   /* with the NUL */
	p = core_buf_take(&b, &len);
	assert_int_equal(len, 14);
	assert_memory_equal(p, "abc\0zdef[42-x]", 15);
	free(p);
	/* after take: empty, same ceiling, reusable */
	assert_int_equal(core_buf_len(&b), 0);
	assert_int_equal(b.max, 1000);
	assert_int_equal(core_buf_adds(&b, "again"), 0);
	assert_string_equal(core_buf_str(&b), "again");
	core_buf_free(&b);
	assert_null(b.p);
}

/* Many small appends across several reallocations keep every byte. */
static void test_growth(void **state)
{
	struct core_buf b = CORE_BUF_INIT(200000);
	char *ref = malloc(200000);
	size_t n = 0, i = 0;

	(void)state;
	assert_non_null(ref);
	while (n < 150000) {
		char chunk[8];
		size_t k = 1 + i % 7, j;

		for (j = 0; j < k; j++)
			chunk[j] = (char)('a' + (i + j) % 26);
		assert_int_equal(core_buf_add(&b, chunk, k), 0);
		memcpy(ref + n, chunk, k);
		n += k;
		i++;
	}
	assert_int_equal(core_buf_len(&b), n);
	assert_memory_equal(core_buf_str(&b), ref, n);
	assert_int_equal(core_buf_str(&b)[n], '\0');
	assert_true(b.cap <= b.max + 1);
	free(ref);
	core_buf_free(&b);
}

/* max bytes fit exactly; one more is an error that frees the content and
 * sticks until core_buf_free. */
static void test_ceiling_exact(void **state)
{
	struct core_buf b = CORE_BUF_INIT(10);
	char *p;
	size_t len = 7;

	(void)state;
	assert_int_equal(core_buf_add(&b, "0123456789", 10), 0);
	assert_int_equal(core_buf_len(&b), 10);
	assert_true(b.cap <= 11);
	assert_int_equal(core_buf_add(&b, "x", 1), -E2BIG);
	assert_int_equal(core_buf_error(&b), -E2BIG);
	assert_int_equal(core_buf_len(&b), 0);
	assert_string_equal(core_buf_str(&b), "");
	assert_null(b.p);
	/* sticky: even an append that would fit, or of nothing, fails */
	assert_int_equal(core_buf_add(&b, "", 0), -E2BIG);
	assert_int_equal(core_buf_adds(&b, "y"), -E2BIG);
	assert_int_equal(core_buf_printf(&b, "%d", 1), -E2BIG);
	assert_int_equal(core_buf_add_b64(&b, "a", 1, 0, NULL), -E2BIG);
	assert_null(core_buf_take(&b, &len));
	assert_int_equal(len, 0);
	/* free clears the error and keeps the ceiling */
	core_buf_free(&b);
	assert_int_equal(core_buf_error(&b), 0);
	assert_int_equal(core_buf_add(&b, "0123456789", 10), 0);
	p = core_buf_take(&b, NULL);
	assert_string_equal(p, "0123456789");
	free(p);
	core_buf_free(&b);
}

static void test_ceiling_zero_and_huge_n(void **state)
{
	struct core_buf b = CORE_BUF_INIT(0), big = CORE_BUF_INIT(SIZE_MAX);

	(void)state;
	assert_int_equal(core_buf_add(&b, "", 0), 0);
	assert_string_equal(core_buf_str(&b), "");
	assert_int_equal(core_buf_add(&b, "a", 1), -E2BIG);
	core_buf_free(&b);
	/* a length that would wrap len + n + 1 must not reach memcpy */
	assert_int_equal(core_buf_add(&big, "ab", 2), 0);
	assert_int_equal(core_buf_add(&big, "x", SIZE_MAX - 1), -E2BIG);
	core_buf_free(&big);
	core_buf_init(&big, SIZE_MAX);
	assert_int_equal(core_buf_add(&big, "x", SIZE_MAX), -E2BIG);
	core_buf_free(&big);
}

/* An allocation that cannot succeed is -ENOMEM (before any copy). */
static void test_enomem(void **state)
{
	struct core_buf b = CORE_BUF_INIT(SIZE_MAX / 2);

	(void)state;
	assert_int_equal(core_buf_adds(&b, "abc"), 0);
	assert_int_equal(core_buf_add(&b, "x", (size_t)1 << 52), -ENOMEM);
	assert_int_equal(core_buf_error(&b), -ENOMEM);
	assert_null(b.p);
	assert_null(core_buf_take(&b, NULL));
	core_buf_free(&b);
}

static void test_printf_growth_and_ceiling(void **state)
{
	struct core_buf b = CORE_BUF_INIT(1000);
	char want[1001];

	(void)state;
	memset(want, 'q', 600);
	want[600] = '\0';
	/* longer than the first allocation: formatted again after growing */
	assert_int_equal(core_buf_printf(&b, "%s", want), 0);
	assert_int_equal(core_buf_len(&b), 600);
	assert_string_equal(core_buf_str(&b), want);
	/* up to the ceiling exactly */
	assert_int_equal(core_buf_printf(&b, "%0400d", 7), 0);
	assert_int_equal(core_buf_len(&b), 1000);
	assert_int_equal(core_buf_str(&b)[999], '7');
	assert_int_equal(core_buf_str(&b)[600], '0');
	core_buf_free(&b);
	/* one past it */
	assert_int_equal(core_buf_printf(&b, "%s", want), 0);
	assert_int_equal(core_buf_printf(&b, "%0401d", 7), -E2BIG);
	assert_int_equal(core_buf_len(&b), 0);
	core_buf_free(&b);
	/* a format that fits in place leaves what is there intact */
	assert_int_equal(core_buf_adds(&b, "head:"), 0);
	assert_int_equal(core_buf_printf(&b, "%s=%u;", "k", 3u), 0);
	assert_int_equal(core_buf_printf(&b, "%c", 'Z'), 0);
	assert_string_equal(core_buf_str(&b), "head:k=3;Z");
	core_buf_free(&b);
}

/* RFC 4648 §10 test vectors. */
static void test_b64_vectors(void **state)
{
	static const char *const in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const out[] = { "",         "Zg==",     "Zm8=",    "Zm9v",
					   "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	size_t i;

	(void)state;
	for (i = 0; i < 7; i++) {
		struct core_buf b = CORE_BUF_INIT(100);

		assert_int_equal(core_buf_add_b64(&b, in[i], strlen(in[i]), 0, "ignored"), 0);
		assert_string_equal(core_buf_str(&b), out[i]);
		core_buf_free(&b);
	}
}

static void test_b64_lines(void **state)
{
	struct core_buf b = CORE_BUF_INIT(1000);
	unsigned char data[114];
	const char *s;
	size_t i;

	(void)state;
	/* after existing content, 6 characters in lines of 4 */
	core_buf_adds(&b, ">");
	assert_int_equal(core_buf_add_b64(&b, "foob", 4, 4, "\r\n"), 0);
	assert_string_equal(core_buf_str(&b), ">Zm9v\r\nYg==");
	core_buf_free(&b);
	/* an exact multiple of the width: no separator after the last line */
	assert_int_equal(core_buf_add_b64(&b, "foobar", 6, 4, "|"), 0);
	assert_string_equal(core_buf_str(&b), "Zm9v|YmFy");
	core_buf_free(&b);
	/* a long separator and a width that is not a multiple of 4 */
	assert_int_equal(core_buf_add_b64(&b, "foobar", 6, 3, "<-->"), 0);
	assert_string_equal(core_buf_str(&b), "Zm9<-->vYm<-->Fy");
	core_buf_free(&b);
	/* NULL or empty separator: one run */
	assert_int_equal(core_buf_add_b64(&b, "foobar", 6, 2, NULL), 0);
	assert_int_equal(core_buf_add_b64(&b, "foobar", 6, 2, ""), 0);
	assert_string_equal(core_buf_str(&b), "Zm9vYmFyZm9vYmFy");
	core_buf_free(&b);
	/* MIME: 114 bytes = 152 characters = two full lines of 76 */
	for (i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 37 + 11);
	assert_int_equal(core_buf_add_b64(&b, data, sizeof(data), 76, "\r\n"), 0);
	s = core_buf_str(&b);
	assert_int_equal(core_buf_len(&b), 154);
	assert_memory_equal(s + 76, "\r\n", 2);
	assert_null(strchr(s + 78, '\r'));
	core_buf_free(&b);
	/* empty input adds nothing, even with a separator */
	assert_int_equal(core_buf_add_b64(&b, "", 0, 76, "\r\n"), 0);
	assert_int_equal(core_buf_len(&b), 0);
	core_buf_free(&b);
}

static void test_b64_ceiling(void **state)
{
	struct core_buf b = CORE_BUF_INIT(11);

	(void)state;
	/* "Zm9v\r\nYmFy" is 10 characters: fits; with one more byte it does not */
	assert_int_equal(core_buf_add_b64(&b, "foobar", 6, 4, "\r\n"), 0);
	assert_int_equal(core_buf_len(&b), 10);
	core_buf_free(&b);
	assert_int_equal(core_buf_adds(&b, "ab"), 0);
	assert_int_equal(core_buf_add_b64(&b, "foobar", 6, 4, "\r\n"), -E2BIG);
	assert_int_equal(core_buf_len(&b), 0);
	core_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_append_and_take),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_ceiling_exact),
		cmocka_unit_test(test_ceiling_zero_and_huge_n),
		cmocka_unit_test(test_enomem),
		cmocka_unit_test(test_printf_growth_and_ceiling),
		cmocka_unit_test(test_b64_vectors),
		cmocka_unit_test(test_b64_lines),
		cmocka_unit_test(test_b64_ceiling),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
