/* A DNS answer message read without sockets: the header bits DANE needs (RCODE,
 * AD) and the answer records of one type at the end of the question's CNAME chain. */
#ifndef STSRELAY_DNS_MSG_H
#define STSRELAY_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp/tlsa.h"

#define DNS_MSG_NAME_MAX 253 /* presentation form, without trailing dot */
#define DNS_MSG_CHAIN_MAX 8  /* CNAME hops followed inside one answer */

#define DNS_MSG_TYPE_A 1
#define DNS_MSG_TYPE_CNAME 5
#define DNS_MSG_TYPE_AAAA 28
#define DNS_MSG_TYPE_TLSA 52

struct dns_msg_info {
	unsigned rcode;                    /* RFC 1035 §4.1.1 RCODE */
	bool ad;                           /* Authentic Data (RFC 4035 §3.2.3) */
	unsigned ancount;                  /* answer records in the message */
	char qname[DNS_MSG_NAME_MAX + 1];  /* the question, lower case */
	char target[DNS_MSG_NAME_MAX + 1]; /* where the question's CNAME chain in
					    * the answer ends (= qname without one) */
	bool cname;                        /* the chain has at least one CNAME */
};

/* Reads the header, the one question and the answer section of msg. For
 * each answer record of type `type` owned by info->target, rr(arg, rdata,
 * rdlen) is called (rr may be NULL). Names compare case-insensitively. A
 * chain longer than DNS_MSG_CHAIN_MAX or looping ends where it stands.
 * Returns 0, or -1 with a static reason (truncated or malformed message:
 * then nothing of it may be trusted). Pure: reads msg only. */
int dns_msg_read(const unsigned char *msg, size_t len, uint16_t type, struct dns_msg_info *info,
		 void (*rr)(void *arg, const unsigned char *rdata, size_t rdlen), void *arg,
		 const char **reason);

/* The TLSA RRset of an answer (RFC 6698): dns_msg_read() with the records
 * parsed by smtp_tlsa_parse() into set (records that do not parse are
 * counted in *bad and skipped; beyond SMTP_TLSA_MAX they are dropped).
 * Returns 0 or -1 (reason) as dns_msg_read. */
int dns_msg_tlsa(const unsigned char *msg, size_t len, struct dns_msg_info *info,
		 struct smtp_tlsa_set *set, size_t *bad, const char **reason);

#endif
