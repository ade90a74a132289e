/* Adapter from the MTA-STS engine's resolver table (sts/fetch.h) to the
 * relay's c-ares resolver (relay/net/dns.h), so every policy lookup honours dns_servers. */
#ifndef STSRELAY_STS_DNS_H
#define STSRELAY_STS_DNS_H

#include "relay/net/dns.h"
#include "sts/fetch.h"

/* Fills *out so that lookups go to dns. dns must outlive every user of
 * *out (the engine); free the engine before dns_free(dns). */
void sts_dns_resolver(struct dns *dns, struct sts_resolver *out);

#endif
