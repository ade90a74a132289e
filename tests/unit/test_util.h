/* Helpers shared by the unit tests: scratch directories under /tmp that are
 * made fresh for a test and removed with everything in them afterwards. */
#ifndef STSRELAY_TEST_UTIL_H
#define STSRELAY_TEST_UTIL_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>

static int test_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes dir and everything below it (links are not followed). */
static inline void test_rmtree(const char *dir)
{
	nftw(dir, test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Entries in dir other than . and .. (what `ls -A | wc -l` says), -1 if
 * it cannot be read. */
static inline int test_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

#endif
