/* Shared by plat_mps2.c and plat_systick.c: wait for a down-counter's next tick edge, and convert
 * ticks to instructions (QEMU -icount shift=0: one virtual ns per instruction). */
#ifndef PLAT_POLL_H
#define PLAT_POLL_H
#include <stdint.h>

#define POLL_INSNS 4u                     /* ldr, adds, cmp, beq below */

/* Spins until the counter at `reg` changes, counting polls; returns the new value. Low registers
 * ("l") and unified syntax, so the same loop assembles for Thumb-1 (Cortex-M0/M0+) and Thumb-2. */
static inline uint32_t plat_next_edge(const volatile uint32_t *reg, uint32_t *polls)
{
    uint32_t v0 = *reg, v, n = *polls;
    __asm__ volatile(".syntax unified\n"
                     "1: ldr %0, [%2]\n"
                     "   adds %1, %1, #1\n"
                     "   cmp %0, %3\n"
                     "   beq 1b\n"
                     : "=&l"(v), "+l"(n) : "l"(reg), "l"(v0) : "cc", "memory");
    *polls = n;
    return v;
}

#ifdef TIMER_HZ
/* ns per tick x 4: exact for every clock QEMU's machines run the timer at (16, 20, 25, 32 MHz) */
#define NS_PER_TICK_X4 (4000000000u / TIMER_HZ)
_Static_assert(4000000000u % TIMER_HZ == 0, "TIMER_HZ must divide 4 GHz (ns per tick a multiple of 1/4)");

static inline uint64_t plat_ticks_ns(uint64_t ticks)
{
    return (ticks * NS_PER_TICK_X4) >> 2;
}
#endif
#endif
