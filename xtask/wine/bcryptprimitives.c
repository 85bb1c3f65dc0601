/* ProcessPrng, which Rust's standard library asks bcryptprimitives.dll for since
 * Rust 1.78 (rust-lang/rust#128066), and which Wine 8.0 lacks: the operating system's
 * random bytes, from advapi32's RtlGenRandom (SystemFunction036). Built by
 * `cargo xtask test-windows` into the Wine prefix of the tests only. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
