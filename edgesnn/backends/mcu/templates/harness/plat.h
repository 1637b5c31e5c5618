/* Tiny platform layer: a monotonic time source in ns.
 * Bare metal under `qemu -icount shift=0`: 1 ns of virtual time == 1 guest instruction. */
#ifndef PLAT_H
#define PLAT_H
#include <stdint.h>
void plat_init(void);
uint64_t plat_ns(void);          /* virtual ns on QEMU/icount, real ns on host */
extern const char *plat_unit;     /* "insn" (icount) or "ns" (host) */
extern const unsigned plat_res;   /* resolution of plat_ns() in ns */
#endif
