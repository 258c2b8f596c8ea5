/* gwstats.c: the one sg_gw_stats instance (gwstats.h). */
#include "gwstats.h"

sg_gw_stats_t sg_gw_stats;
