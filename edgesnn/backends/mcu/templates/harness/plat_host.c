/* Host / Linux user-mode time source (real time, not instructions). */
#define _POSIX_C_SOURCE 199309L
#include <time.h>
#include "plat.h"
const char *plat_unit = "ns(real)";
const unsigned plat_res = 1;
void plat_init(void) {}
uint64_t plat_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}
