/* argv.exe: how a Windows program reads its command line, for the quoting tests (tests/protocol/test_cmdline.py).
 *
 *   argv.exe --run LINES OUT   for each NUL-terminated UTF-8 command line in the file LINES, start this exe again
 *                              with exactly that text after its quoted path (CreateProcessW) and wait for it.
 *   argv.exe ...               (a child) append one JSON line to the file named by ARGV_OUT:
 *                              {"shell32": [...], "crt": [...]}: the arguments as CommandLineToArgvW and as the
 *                              C runtime (__wargv) parse them, each UTF-16 unit written as \uXXXX.
 */
#include <windows.h>
#include <shellapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int crt_argc;
static wchar_t **crt_argv;

static void put_array(FILE *f, int argc, wchar_t **argv, int from) {
    fputc('[', f);
    for (int i = from; i < argc; i++) {
        if (i > from) fputc(',', f);
        fputc('"', f);
        for (wchar_t *p = argv[i]; *p; p++) fprintf(f, "\\u%04x", (unsigned)*p);
        fputc('"', f);
    }
    fputc(']', f);
}

static int child(void) {
    wchar_t out[32768];
    if (!GetEnvironmentVariableW(L"ARGV_OUT", out, 32768)) return 2;
    FILE *f = _wfopen(out, L"ab");
    if (!f) return 3;
    int n = 0;
    wchar_t **shell = CommandLineToArgvW(GetCommandLineW(), &n);
    fputs("{\"shell32\":", f);
    put_array(f, n, shell, 1);
    fputs(",\"crt\":", f);
    put_array(f, crt_argc, crt_argv, 1);
    fputs("}\n", f);
    fclose(f);
    return 0;
}

static int run(const wchar_t *lines_path, const wchar_t *out_path) {
    FILE *f = _wfopen(lines_path, L"rb");
    if (!f) return 4;
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = 0;
    SetEnvironmentVariableW(L"ARGV_OUT", out_path);
    wchar_t self[MAX_PATH];
    GetModuleFileNameW(NULL, self, MAX_PATH);
    static wchar_t line[32768];
    for (size_t at = 0; at < len; at += strlen(buf + at) + 1) {
        int used = swprintf(line, 32768, L"\"%ls\" ", self);
        int got = MultiByteToWideChar(CP_UTF8, 0, buf + at, -1, line + used, 32768 - used);
        if (got == 0) return 5;
        STARTUPINFOW si = {sizeof(si)};
        PROCESS_INFORMATION pi;
        if (!CreateProcessW(self, line, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi)) return 6;
        WaitForSingleObject(pi.hProcess, INFINITE);
        CloseHandle(pi.hProcess);
        CloseHandle(pi.hThread);
    }
    return 0;
}

int wmain(int argc, wchar_t **argv) {
    crt_argc = argc;
    crt_argv = argv;  /* the C runtime's own parse of the command line */
    if (argc == 4 && wcscmp(argv[1], L"--run") == 0) return run(argv[2], argv[3]);
    return child();
}
