/* Bare-metal time source on QEMU's MPS2 machines: CMSDK APB TIMER0, a 32-bit down-counter clocked
 * by the board's PCLK (QEMU: 25 MHz on mps2-an385/an386/an500, 20 MHz on mps2-an505). QEMU models
 * it with a ptimer on QEMU_CLOCK_VIRTUAL, so under -icount shift=0 one tick = 40 (50) guest
 * instructions. To get better than 1-tick resolution, plat_ns() spins until the next tick
 * edge and subtracts the spin length (polls * POLL_INSNS): result = time of the call,
 * precise to a few instructions, plus a constant that cancels in differences.
 * (SysTick, plat_systick.c, serves cores without this timer; DWT CYCCNT and semihosting
 * SYS_ELAPSED are unusable; docs/mcu.md, Verify) */
#include "plat.h"

#ifndef TIMER0_BASE
#define TIMER0_BASE 0x40000000u          /* an385/an386/an500; an505 secure alias: 0x50000000 */
#endif
#ifndef TIMER_HZ
#define TIMER_HZ 25000000u
#endif
#include "plat_poll.h"

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
    uint32_t polls = 0;
    uint32_t now = ~plat_next_edge(&TIMER0->VALUE, &polls);  /* down-counter -> up-counter */
    ticks += (uint32_t)(now - last);
    last = now;
    return plat_ticks_ns(ticks) - (uint64_t)polls * POLL_INSNS;
}
