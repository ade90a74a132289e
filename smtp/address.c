/* Mailbox addresses: RFC 5321 syntax (listener, sendmail) and the single
 * "can the client send it" rule that both ends share. Pure. */
#include "smtp/address.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define LOCAL_PART_MAX 64
#define LABEL_MAX 63

bool smtp_address_sendable(const char *addr, bool sender, const char **why)
{
	const char *dummy;
	size_t i;

	if (why == NULL)
		why = &dummy;
	if (addr == NULL) {
		*why = "no address";
		return false;
	}
	if (addr[0] == '\0' && !sender) {
		*why = "empty address";
		return false;
	}
	for (i = 0; addr[i] != '\0'; i++) {
		unsigned char c = (unsigned char)addr[i];

		if (i >= SMTP_ADDRESS_SEND_MAX) {
			*why = "address longer than 511 octets";
			return false;
		}
		if (c < 0x20 || c == 0x7f) {
			*why = "control character in address";
			return false;
		}
		if (c == '<' || c == '>') {
			*why = "'<' or '>' in address";
			return false;
		}
	}
	return true;
}

static bool is_atext(unsigned char c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Domain: LDH labels separated by dots, or an address literal. */
static bool domain_valid(const char *d, size_t len)
{
	size_t i, label = 0;

	if (len == 0 || len > SMTP_DOMAIN_MAX)
		return false;
	if (d[0] == '[') {
		char lit[SMTP_DOMAIN_MAX + 1];
		unsigned char bin[16];

		if (d[len - 1] != ']' || len < 3)
			return false;
		memcpy(lit, d + 1, len - 2);
		lit[len - 2] = '\0';
		if (strncasecmp(lit, "IPv6:", 5) == 0)
			return inet_pton(AF_INET6, lit + 5, bin) == 1;
		return inet_pton(AF_INET, lit, bin) == 1;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];
		if (c == '.') {
			if (label == 0 || d[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-')
			return false;
		if (label == 0 && c == '-')
			return false;
		if (++label > LABEL_MAX)
			return false;
	}
	return label > 0 && d[len - 1] != '-';
}

static bool local_valid(const char *l, size_t len)
{
	size_t i;

	if (len == 0 || len > LOCAL_PART_MAX + 2)
		return false;
	if (l[0] == '"') {
		/* quoted-string: printable ASCII, backslash escapes one char */
		if (len < 2 || l[len - 1] != '"')
			return false;
		for (i = 1; i < len - 1; i++) {
			unsigned char c = (unsigned char)l[i];
			if (c < 0x20 || c > 0x7e)
				return false;
			if (c == '"')
				return false;
			if (c == '\\') {
				if (++i >= len - 1)
					return false;
				if ((unsigned char)l[i] < 0x20 || (unsigned char)l[i] > 0x7e)
					return false;
			}
		}
		return true;
	}
	if (len > LOCAL_PART_MAX || l[0] == '.' || l[len - 1] == '.')
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)l[i];
		if (c == '.') {
			if (l[i - 1] == '.')
				return false;
		} else if (!is_atext(c)) {
			return false;
		}
	}
	return true;
}

int smtp_address_valid(const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t len = strlen(addr);

	if (at == NULL || len > SMTP_PATH_MAX)
		return -1;
	if (!local_valid(addr, (size_t)(at - addr)))
		return -1;
	if (!domain_valid(at + 1, len - (size_t)(at - addr) - 1))
		return -1;
	/* What passes here must go out again: one rule, never two. */
	if (!smtp_address_sendable(addr, false, NULL))
		return -1;
	return 0;
}

const char *smtp_address_domain(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	return at ? at + 1 : NULL;
}


/* Compares a domain with a name, ignoring case and one trailing dot on the
 * domain. */
static bool domain_is(const char *d, size_t len, const char *name)
{
	if (len > 0 && d[len - 1] == '.')
		len--;
	return len == strlen(name) && strncasecmp(d, name, len) == 0;
}

enum smtp_local_result smtp_address_local(const char *addr, const char *hostname,
					  const char *alias_root, char *out, size_t outlen)
{
	static const char *const system_boxes[] = {
		"root",       "postmaster", "mailer-daemon", "abuse",
		"hostmaster", "webmaster",  "noc",           "security",
	};
	const char *at = strrchr(addr, '@');
	bool local = false;
	size_t i;

	if (at == NULL) {
		local = true;
	} else if (domain_is(at + 1, strlen(at + 1), "localhost")) {
		local = true;
	} else if (hostname != NULL && domain_is(at + 1, strlen(at + 1), hostname)) {
		for (i = 0; i < sizeof(system_boxes) / sizeof(system_boxes[0]) && !local; i++)
			local = (size_t)(at - addr) == strlen(system_boxes[i]) &&
				strncasecmp(addr, system_boxes[i], (size_t)(at - addr)) == 0;
	}
	if (!local)
		return SMTP_NOT_LOCAL;
	if (alias_root == NULL || alias_root[0] == '\0' || smtp_address_valid(alias_root) != 0 ||
	    strlen(alias_root) >= outlen)
		return SMTP_LOCAL_REFUSED;
	memcpy(out, alias_root, strlen(alias_root) + 1);
	return SMTP_LOCAL_REWRITTEN;
}
