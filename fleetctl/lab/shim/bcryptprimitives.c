/* bcryptprimitives.dll with its one export that Go needs, for the lab's Wine prefix only.
 *
 * Since Go 1.22 the Windows runtime loads bcryptprimitives.dll at start-up and takes its random bytes from
 * ProcessPrng; Wine added that DLL in 9.0, so under Wine 8 such an exe dies with "bcryptprimitives.dll not
 * found". fleetctl.lab.wine_shim cross-builds this file with x86_64-w64-mingw32-gcc into the prefix's
 * system32 where (and only where) Wine's own DLL is missing. It never reaches a real node: Windows 8 and later
 * ship the real DLL.
 *
 * ProcessPrng is documented to always succeed and return TRUE. It is served here by RtlGenRandom (advapi32's
 * SystemFunction036), whose length is a ULONG: larger requests go in chunks.
 */
#include <windows.h>
#include <ntsecapi.h>

#define CHUNK ((SIZE_T)1 << 30)

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG part = (ULONG)(len < CHUNK ? len : CHUNK);
        if (!RtlGenRandom(data, part))
            return FALSE;
        data += part;
        len -= part;
    }
    return TRUE;
}
