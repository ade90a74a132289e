/* Shared by the TXT fuzz targets: turns fuzz input into a TXT RRset, split
 * into records at 0x1E bytes and into character-strings at 0x1F bytes. */
#ifndef STSRELAY_FUZZ_TXT_SPLIT_H
#define STSRELAY_FUZZ_TXT_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "sts/txt.h"

#define FUZZ_TXT_MAX_PARTS 64

/* Fills strs/recs (FUZZ_TXT_MAX_PARTS each) from data; returns the number
 * of records (at least 1). */
static size_t fuzz_txt_split(const uint8_t *data, size_t size, struct sts_txt_string *strs,
			     struct sts_txt_record *recs)
{
	size_t ns = 0, nr = 1, start = 0;

	recs[0].strings = &strs[0];
	recs[0].nstrings = 0;
	for (size_t i = 0; i <= size && ns < FUZZ_TXT_MAX_PARTS; i++) {
		if (i < size && data[i] != 0x1E && data[i] != 0x1F)
			continue;
		strs[ns].data = data + start;
		strs[ns].len = i - start;
		recs[nr - 1].nstrings++;
		ns++;
		start = i + 1;
		if (i < size && data[i] == 0x1E && nr < FUZZ_TXT_MAX_PARTS &&
		    ns < FUZZ_TXT_MAX_PARTS) {
			recs[nr].strings = &strs[ns];
			recs[nr].nstrings = 0;
			nr++;
		}
	}
	return nr;
}

#endif
