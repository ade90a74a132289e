/* TLSA records (RFC 6698 §2.1) as DANE for SMTP uses them (RFC 7672 §3): the
 * RDATA parser (bytes in, struct out), the usability rule, the presentation form. */
#ifndef STSRELAY_SMTP_TLSA_H
#define STSRELAY_SMTP_TLSA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds. An RDATA whose association data is longer than SMTP_TLSA_DATA_MAX
 * (a full certificate of more than 4 KiB) is refused by the parser, never cut;
 * an RRset keeps its first SMTP_TLSA_MAX records (RFC 7672 §3.1 asks servers
 * for few records: one per key in use during a rollover). */
#define SMTP_TLSA_DATA_MAX 4096
#define SMTP_TLSA_MAX 8
/* "3 1 1 " + upper-case hex of the data + NUL */
#define SMTP_TLSA_TEXT_MAX (16 + 2 * SMTP_TLSA_DATA_MAX)

enum smtp_tlsa_usage {
	SMTP_TLSA_PKIX_TA = 0, /* ignored for SMTP (RFC 7672 §3.1.3) */
	SMTP_TLSA_PKIX_EE = 1, /* ignored for SMTP (RFC 7672 §3.1.3) */
	SMTP_TLSA_DANE_TA = 2,
	SMTP_TLSA_DANE_EE = 3,
};
enum smtp_tlsa_selector { SMTP_TLSA_CERT = 0, SMTP_TLSA_SPKI = 1 };
enum smtp_tlsa_mtype { SMTP_TLSA_FULL = 0, SMTP_TLSA_SHA256 = 1, SMTP_TLSA_SHA512 = 2 };

/* One record as published: the three numbers whatever their value (an
 * unknown one only makes the record unusable), and the association data. */
struct smtp_tlsa {
	uint8_t usage, selector, mtype;
	size_t len;
	unsigned char data[SMTP_TLSA_DATA_MAX];
};

/* An RRset, in DNS order. */
struct smtp_tlsa_set {
	size_t n;
	struct smtp_tlsa rec[SMTP_TLSA_MAX];
};

/* Parses one TLSA RDATA: usage, selector, matching type (one octet each),
 * then the association data (RFC 6698 §2.1). Returns 0, or -1 with a static
 * reason (shorter than 4 octets: no data at all; data too long). Pure: no
 * allocation, the input is only read. */
int smtp_tlsa_parse(const unsigned char *rdata, size_t len, struct smtp_tlsa *out,
		    const char **reason);

/* RFC 7672 §3.1 and §3.2: a record SMTP may act on. DANE-TA(2) or DANE-EE(3)
 * usage, selector Cert(0) or SPKI(1), matching type Full(0) with data that is
 * a DER certificate (selector 0) or SubjectPublicKeyInfo (selector 1), or
 * SHA2-256(1) / SHA2-512(2) with a digest of exactly 32 / 64 octets.
 * PKIX-TA(0)/PKIX-EE(1) and unknown values are unusable. */
bool smtp_tlsa_usable(const struct smtp_tlsa *t);
/* Records of set that are usable. */
size_t smtp_tlsa_count_usable(const struct smtp_tlsa_set *set);

/* The presentation form "U S M HEX" (RFC 6698 §2.2, hex in upper case), as
 * the RFC 8460 policy-string lists each record. Returns the length, or -1
 * when buf (at most SMTP_TLSA_TEXT_MAX is ever needed) is too small. */
int smtp_tlsa_format(const struct smtp_tlsa *t, char *buf, size_t len);

#endif
