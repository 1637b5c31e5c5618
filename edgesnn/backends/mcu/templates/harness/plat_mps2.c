/* Bare-metal MPS2 time source: CMSDK APB TIMER0, a 32-bit down-counter clocked by the
 * board's PCLK (QEMU: 25 MHz on mps2-an386/an500, 20 MHz on mps2-an505). QEMU models it
 * with a ptimer on QEMU_CLOCK_VIRTUAL, so under -icount shift=0 one tick = 40 (50) guest
 * instructions. To get better than 1-tick resolution, plat_ns() spins until the next tick
 * edge and subtracts the spin length (polls * POLL_INSNS): result = time of the call,
 * precise to a few instructions, plus a constant that cancels in differences.
 * (SysTick is only 24 bit; DWT CYCCNT and semihosting SYS_ELAPSED are unusable, see README.) */
#include "plat.h"

#ifndef TIMER0_BASE
#define TIMER0_BASE 0x40000000u          /* an385/an386/an500; an505 secure alias: 0x50000000 */
#endif
#ifndef TIMER_HZ
#define TIMER_HZ 25000000u
#endif
#define NS_PER_TICK (1000000000u / TIMER_HZ)
#define POLL_INSNS 4u                     /* ldr, adds, cmp, bne below */

typedef struct { volatile uint32_t CTRL, VALUE, RELOAD, INTSTATUS; } cmsdk_timer_t;
#define TIMER0 ((cmsdk_timer_t *)TIMER0_BASE)

const char *plat_unit = "insn";
const unsigned plat_res = 1;

void plat_init(void)
{
    TIMER0->CTRL = 0;
    TIMER0->RELOAD = 0xffffffffu;
    TIMER0->VALUE = 0xffffffffu;
    TIMER0->CTRL = 1;                     /* enable, PCLK, no interrupt */
}

uint64_t plat_ns(void)                    /* call at least once per 2^32 ticks (171 s virtual) */
{
    static uint32_t last;
    static uint64_t ticks;
    uint32_t v0 = TIMER0->VALUE, v, polls = 0;
    __asm__ volatile("1: ldr %0, [%2]\n"  /* wait for the next tick edge, counting polls */
                     "   adds %1, %1, #1\n"
                     "   cmp %0, %3\n"
                     "   beq 1b\n"
                     : "=&r"(v), "+r"(polls) : "r"(&TIMER0->VALUE), "r"(v0) : "cc", "memory");
    uint32_t now = ~v;                    /* down-counter -> up-counter */
    ticks += (uint32_t)(now - last);
    last = now;
    return ticks * NS_PER_TICK - (uint64_t)polls * POLL_INSNS;
}
