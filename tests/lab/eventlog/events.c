/* events.exe: a console program that writes to the Windows event log under the source "con" and to stdout, then
 * stays up; for the lab's event-log capture test (tests/lab/test_nssm.py). */
#include <windows.h>
#include <stdio.h>

int main(void) {
    HANDLE source = RegisterEventSourceW(NULL, L"con");
    LPCWSTR started[1] = {L"con started: gr\u00fc\u00dfe \"quoted\""};
    LPCWSTR failed[1] = {L"something failed"};
    ReportEventW(source, EVENTLOG_INFORMATION_TYPE, 0, 1, NULL, 1, 0, started, NULL);
    ReportEventW(source, EVENTLOG_ERROR_TYPE, 0, 3, NULL, 1, 0, failed, NULL);
    DeregisterEventSource(source);
    printf("program output\n");
    fflush(stdout);
    Sleep(60000);
    return 0;
}
