/* DNS answer messages (RFC 1035 §4) read with bounds on every step: header
 * bits, compressed names, the question's CNAME chain, records of one type. */
#include "relay/net/dns_msg.h"

#include <string.h>

#define HDR 12
#define MAX_JUMPS 32 /* compression pointers followed in one name */

/* Reads the name at *off into out (lower case, dots between labels, no
 * trailing dot; the root is ""), and moves *off past it in the message.
 * -1 on a malformed name (out of bounds, pointer loop, too long). */
static int read_name(const unsigned char *m, size_t len, size_t *off, char *out)
{
	size_t p = *off, o = 0, end = 0, wire = 0;
	unsigned jumps = 0;
	bool jumped = false;

	for (;;) {
		unsigned l;

		if (p >= len)
			return -1;
		l = m[p];
		if ((l & 0xc0) == 0xc0) {
			if (p + 1 >= len || ++jumps > MAX_JUMPS)
				return -1;
			if (!jumped)
				end = p + 2;
			jumped = true;
			p = ((size_t)(l & 0x3f) << 8) | m[p + 1];
			continue;
		}
		if ((l & 0xc0) != 0)
			return -1; /* the 0x40/0x80 label types are obsolete */
		if (l == 0) {
			if (!jumped)
				end = p + 1;
			break;
		}
		/* RFC 1035 §3.1: 255 octets with the root's zero, so at most 253
		 * characters in presentation form (what out holds). */
		wire += l + 1;
		if (wire > 254 || p + 1 + l > len || o + (o > 0) + l > DNS_MSG_NAME_MAX)
			return -1;
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 0; i < l; i++) {
			unsigned char c = m[p + 1 + i];

			out[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
		}
		p += 1 + l;
	}
	out[o] = '\0';
	*off = end;
	return 0;
}

static unsigned u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* One answer record's owner, type and RDATA position. */
struct rr {
	char owner[DNS_MSG_NAME_MAX + 1];
	unsigned type;
	size_t rdata, rdlen;
};

/* The answer records, from the first one at off; each call reads the next. */
static int next_rr(const unsigned char *m, size_t len, size_t *off, struct rr *r)
{
	if (read_name(m, len, off, r->owner) != 0 || *off + 10 > len)
		return -1;
	r->type = u16(m + *off);
	r->rdlen = u16(m + *off + 8);
	r->rdata = *off + 10;
	if (r->rdata + r->rdlen > len)
		return -1;
	*off = r->rdata + r->rdlen;
	return 0;
}

int dns_msg_read(const unsigned char *msg, size_t len, uint16_t type, struct dns_msg_info *info,
		 void (*rr)(void *arg, const unsigned char *rdata, size_t rdlen), void *arg,
		 const char **reason)
{
	size_t off = HDR, answers, i;
	unsigned qdcount, hop;
	struct rr r;

	memset(info, 0, sizeof(*info));
	*reason = "malformed DNS message";
	if (msg == NULL || len < HDR)
		return -1;
	info->rcode = msg[3] & 0x0f;
	info->ad = (msg[3] & 0x20) != 0;
	qdcount = u16(msg + 4);
	info->ancount = u16(msg + 6);
	if (qdcount != 1)
		return -1;
	if (read_name(msg, len, &off, info->qname) != 0 || off + 4 > len)
		return -1;
	off += 4;
	answers = off;
	memcpy(info->target, info->qname, sizeof(info->target));
	/* The chain first (CNAMEs may come in any order), then the records. */
	for (hop = 0; hop < DNS_MSG_CHAIN_MAX; hop++) {
		bool moved = false;

		off = answers;
		for (i = 0; i < info->ancount; i++) {
			size_t t;
			char next[DNS_MSG_NAME_MAX + 1];

			if (next_rr(msg, len, &off, &r) != 0)
				return -1;
			if (r.type != DNS_MSG_TYPE_CNAME || strcmp(r.owner, info->target) != 0)
				continue;
			t = r.rdata;
			if (read_name(msg, r.rdata + r.rdlen, &t, next) != 0)
				return -1;
			if (strcmp(next, info->target) == 0)
				break; /* a CNAME to itself goes nowhere */
			memcpy(info->target, next, sizeof(info->target));
			info->cname = moved = true;
			break;
		}
		if (!moved)
			break;
	}
	off = answers;
	for (i = 0; i < info->ancount; i++) {
		if (next_rr(msg, len, &off, &r) != 0)
			return -1;
		if (r.type == type && rr != NULL && strcmp(r.owner, info->target) == 0)
			rr(arg, msg + r.rdata, r.rdlen);
	}
	*reason = "";
	return 0;
}

struct tlsa_acc {
	struct smtp_tlsa_set *set;
	size_t *bad;
};

static void take_tlsa(void *arg, const unsigned char *rdata, size_t rdlen)
{
	struct tlsa_acc *a = arg;
	const char *why;

	if (a->set->n >= SMTP_TLSA_MAX)
		return;
	if (smtp_tlsa_parse(rdata, rdlen, &a->set->rec[a->set->n], &why) == 0)
		a->set->n++;
	else
		(*a->bad)++;
}

int dns_msg_tlsa(const unsigned char *msg, size_t len, struct dns_msg_info *info,
		 struct smtp_tlsa_set *set, size_t *bad, const char **reason)
{
	struct tlsa_acc a = { set, bad };

	set->n = 0;
	*bad = 0;
	if (dns_msg_read(msg, len, DNS_MSG_TYPE_TLSA, info, take_tlsa, &a, reason) != 0) {
		set->n = 0;
		return -1;
	}
	return 0;
}
