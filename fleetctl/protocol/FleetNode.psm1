# FleetNode: the node side of the fleetctl node protocol for real Windows (see docs/node-protocol.md).
# Windows PowerShell 5.1 (Server 2016+) and PowerShell 7. Every exported function returns exactly one JSON
# document; user values only ever travel as parameters, never into text that is executed.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$script:FleetProtocolVersion = '1'
$script:FleetDataRoot = Join-Path $env:ProgramData 'fleetctl'
$script:FleetTimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'"
$script:FleetReservedNames = @('CON', 'PRN', 'AUX', 'NUL', 'COM1', 'COM2', 'COM3', 'COM4', 'LPT1', 'LPT2', 'LPT3')

if ($PSVersionTable.PSVersion.Major -lt 6) {
    # Windows PowerShell 5.1 serialises PSObject-wrapped arrays as {"value": [...], "Count": n} because of the
    # ETS Count property on System.Array; without that type data, arrays become plain JSON arrays.
    Remove-TypeData -TypeName System.Array -ErrorAction SilentlyContinue
}

# ---------------------------------------------------------------------------------------------------------------
# The envelope: one JSON document per call, failures as {code, message, details}.

function Throw-FleetError {
    # Internal: raise a protocol error that Invoke-FleetOperation turns into {"ok": false, "error": ...}.
    param([string]$Code, [string]$Message, [hashtable]$Details = @{})
    $exception = New-Object System.Exception -ArgumentList $Message
    $exception.Data['FleetCode'] = $Code
    $exception.Data['FleetDetails'] = $Details
    throw $exception
}

function ConvertTo-FleetErrorDocument {
    param($FleetRecord, [string[]]$FleetSecrets)
    $code = 'INTERNAL'
    $details = @{}
    $message = $null
    $exception = $FleetRecord.Exception
    while ($null -ne $exception) {
        if ($exception.Data.Contains('FleetCode')) {
            $code = [string]$exception.Data['FleetCode']
            $details = $exception.Data['FleetDetails']
            $message = $exception.Message
            break
        }
        # Windows reports full disks and sharing violations as IOException HResults; map them to protocol codes.
        $hresult = $exception.HResult
        if ($hresult -eq -2147024784 -or $hresult -eq -2147024857) {
            $code = 'DISK_FULL'; $message = $exception.Message; break
        }
        if ($hresult -eq -2147024864 -or $hresult -eq -2147024863) {
            $code = 'FILE_IN_USE'; $message = $exception.Message; break
        }
        $exception = $exception.InnerException
    }
    if ($null -eq $message) {
        $message = $FleetRecord.Exception.GetType().Name + ': ' + $FleetRecord.Exception.Message
    }
    # Secret parameter values never leave the node, even inside an exception text.
    foreach ($secret in @($FleetSecrets)) {
        if (-not [string]::IsNullOrEmpty($secret)) { $message = $message.Replace($secret, '********') }
    }
    return @{ ok = $false; error = @{ code = $code; message = $message; details = $details } }
}

function Invoke-FleetOperation {
    # Runs an operation body and writes its one JSON document. The body sees the caller's parameters through
    # PowerShell's dynamic scoping, so this function's own names are prefixed to never shadow them.
    param([scriptblock]$FleetBody, [string[]]$FleetSecrets = @())
    try {
        $fleetOutput = @(& $FleetBody)
        # Only the body's final hashtable is the result: stray output (a cmdlet's return value that was not
        # discarded) must never corrupt the single JSON document the controller reads.
        $fleetResult = @{}
        for ($i = $fleetOutput.Count - 1; $i -ge 0; $i--) {
            if ($fleetOutput[$i] -is [System.Collections.IDictionary]) { $fleetResult = $fleetOutput[$i]; break }
        }
        $fleetDocument = @{ ok = $true; result = $fleetResult }
    } catch {
        $fleetDocument = ConvertTo-FleetErrorDocument -FleetRecord $_ -FleetSecrets $FleetSecrets
    }
    ConvertTo-Json -InputObject $fleetDocument -Compress -Depth 6
}

# ---------------------------------------------------------------------------------------------------------------
# Validation: parameters become paths, registry keys and mutex names, so each is checked before use.

function Assert-FleetName {
    param([string]$Value, [string]$Parameter, [switch]$AllowPlus)
    $pattern = '^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9_-])?$'
    if ($AllowPlus) { $pattern = '^[A-Za-z0-9]([A-Za-z0-9._+-]{0,126}[A-Za-z0-9_+-])?$' }
    if ($Value -notmatch $pattern -or $Value.Contains('..') -or $script:FleetReservedNames -contains $Value.ToUpperInvariant()) {
        Throw-FleetError 'INVALID_ARGUMENT' "$Parameter must be letters, digits, '.', '_' or '-' (not ending in '.')" @{ parameter = $Parameter }
    }
}

function Assert-FleetSha256 {
    param([string]$Value)
    if ($Value -cnotmatch '^[0-9a-f]{64}$') {
        Throw-FleetError 'INVALID_ARGUMENT' 'Sha256 must be 64 lower-case hex digits' @{ parameter = 'Sha256' }
    }
}

function Assert-FleetRoot {
    param([string]$Value)
    if ($Value -notmatch '^[A-Za-z]:\\' -or $Value -match '(^|\\)\.\.(\\|$)' -or $Value -match '[<>"|?*]' -or $Value.IndexOf(':', 2) -ge 0) {
        Throw-FleetError 'INVALID_ARGUMENT' 'Root must be an absolute local path such as C:\apps\hello' @{ parameter = 'Root' }
    }
}

function Assert-FleetRelativePath {
    param([string]$Value, [string]$Parameter)
    $parts = $Value -split '[\\/]'
    if ([string]::IsNullOrEmpty($Value) -or [IO.Path]::IsPathRooted($Value) -or $Value.Contains(':') -or
        $Value -match '[<>"|?*]' -or ($parts -contains '..') -or ($parts -contains '')) {
        Throw-FleetError 'INVALID_ARGUMENT' "$Parameter must be a relative path inside the release without '..'" @{ parameter = $Parameter; value = $Value }
    }
}

function Assert-FleetChoice {
    param([string]$Value, [string[]]$Choices, [string]$Parameter)
    if ($Choices -notcontains $Value) {
        Throw-FleetError 'INVALID_ARGUMENT' ("$Parameter must be one of: " + ($Choices -join ', ')) @{ parameter = $Parameter }
    }
}

# ---------------------------------------------------------------------------------------------------------------
# Node state under %ProgramData%\fleetctl: JSON files replaced atomically, one named mutex per app.

function Get-FleetTime {
    param([datetime]$Value = [datetime]::UtcNow)
    return $Value.ToUniversalTime().ToString($script:FleetTimeFormat, [Globalization.CultureInfo]::InvariantCulture)
}

function ConvertFrom-FleetTime {
    param([string]$Value)
    $styles = [Globalization.DateTimeStyles]::AdjustToUniversal -bor [Globalization.DateTimeStyles]::AssumeUniversal
    return [datetime]::Parse($Value, [Globalization.CultureInfo]::InvariantCulture, $styles)
}

function ConvertTo-FleetHashtable {
    # ConvertFrom-Json gives PSCustomObjects (and -AsHashtable is PowerShell 7 only); state is edited as hashtables.
    param($Value)
    if ($null -eq $Value) { return $null }
    if ($Value -is [datetime]) {
        # PowerShell 7's ConvertFrom-Json turns ISO strings into DateTime; keep the one string format on disk.
        return (Get-FleetTime $Value)
    }
    if ($Value -is [System.Management.Automation.PSCustomObject]) {
        $table = @{}
        foreach ($property in $Value.PSObject.Properties) { $table[$property.Name] = ConvertTo-FleetHashtable $property.Value }
        return $table
    }
    if ($Value -is [System.Collections.IList]) {
        $list = New-Object System.Collections.ArrayList
        foreach ($item in $Value) { $null = $list.Add((ConvertTo-FleetHashtable $item)) }
        return , $list.ToArray()
    }
    return $Value
}

function Read-FleetJsonFile {
    param([string]$Path)
    if (-not [IO.File]::Exists($Path)) { return $null }
    $text = [IO.File]::ReadAllText($Path)
    if ([string]::IsNullOrWhiteSpace($text)) { return $null }
    return (ConvertTo-FleetHashtable (ConvertFrom-Json -InputObject $text))
}

function Write-FleetJsonFile {
    # Write a temp file beside the target, then swap it in: a reader sees the old or the new file, never half.
    param([string]$Path, $Data)
    $directory = [IO.Path]::GetDirectoryName($Path)
    $null = [IO.Directory]::CreateDirectory($directory)
    $temp = $Path + '.' + [guid]::NewGuid().ToString('N') + '.tmp'
    $json = ConvertTo-Json -InputObject $Data -Depth 6
    [IO.File]::WriteAllText($temp, $json, (New-Object System.Text.UTF8Encoding -ArgumentList $false))
    if ([IO.File]::Exists($Path)) { [IO.File]::Replace($temp, $Path, $null) } else { [IO.File]::Move($temp, $Path) }
}

function Get-FleetAppDirectory {
    param([string]$App)
    return (Join-Path (Join-Path $script:FleetDataRoot 'apps') $App)
}

function Read-FleetAppState {
    param([string]$App)
    $state = Read-FleetJsonFile (Join-Path (Get-FleetAppDirectory $App) 'state.json')
    if ($null -eq $state) { $state = @{ app = $App; releases = @(); current = $null; previous = $null; history = @() } }
    foreach ($key in @('releases', 'history')) { $state[$key] = @($state[$key] | Where-Object { $null -ne $_ }) }
    if (-not ($state['colours'] -is [hashtable])) { $state['colours'] = @{} }
    return $state
}

function Write-FleetAppState {
    param([string]$App, [hashtable]$State)
    Write-FleetJsonFile (Join-Path (Get-FleetAppDirectory $App) 'state.json') $State
}

function Add-FleetHistory {
    param([hashtable]$State, [string]$Action, [string]$Release)
    $entries = @($State.history) + @(@{ at = (Get-FleetTime); action = $Action; release = $Release })
    # The node keeps a bounded history; the controller's journal holds the full record.
    if ($entries.Count -gt 200) { $entries = $entries[($entries.Count - 200)..($entries.Count - 1)] }
    $State.history = $entries
}

function Use-FleetAppMutex {
    # Serialises read-modify-write of one app's state and lock across every session on the node.
    param([string]$App, [scriptblock]$FleetCritical)
    $mutex = New-Object System.Threading.Mutex -ArgumentList $false, ('Global\fleetctl-app-' + $App)
    $owned = $false
    try {
        try { $owned = $mutex.WaitOne(30000) } catch [System.Threading.AbandonedMutexException] { $owned = $true }
        if (-not $owned) { Throw-FleetError 'INTERNAL' "timed out waiting for the node-local state mutex of $App" @{} }
        & $FleetCritical
    } finally {
        if ($owned) { $mutex.ReleaseMutex() }
        $mutex.Dispose()
    }
}

function Get-FleetFreeBytes {
    param([string]$Path)
    $drive = New-Object System.IO.DriveInfo -ArgumentList ([IO.Path]::GetPathRoot($Path))
    return [long]$drive.AvailableFreeSpace
}

function Assert-FleetFreeSpace {
    param([string]$Path, [long]$Needed)
    $free = Get-FleetFreeBytes $Path
    if ($free -lt $Needed) {
        Throw-FleetError 'DISK_FULL' "not enough free space on $([IO.Path]::GetPathRoot($Path))" @{ needed = $Needed; free = $free }
    }
}

function Get-FleetArtifactPath {
    param([string]$Sha256)
    return (Join-Path (Join-Path $script:FleetDataRoot 'artifacts') $Sha256)
}

function Complete-FleetArtifact {
    # Verify a downloaded/received file and move it into the cache under its hash; on mismatch nothing is kept.
    param([string]$TempPath, [string]$Sha256, [long]$Size, [long]$Received)
    $actualSize = (New-Object System.IO.FileInfo -ArgumentList $TempPath).Length
    $actual = (Get-FileHash -LiteralPath $TempPath -Algorithm SHA256).Hash.ToLowerInvariant()
    if ($actual -ne $Sha256 -or $actualSize -ne $Size) {
        [IO.File]::Delete($TempPath)
        Throw-FleetError 'CHECKSUM_MISMATCH' 'artifact bytes do not match the expected sha256 and size' @{
            expected = $Sha256; actual = $actual; expected_size = $Size; size = $actualSize
        }
    }
    $target = Get-FleetArtifactPath $Sha256
    if ([IO.File]::Exists($target)) { [IO.File]::Delete($TempPath) } else { [IO.File]::Move($TempPath, $target) }
    return @{ path = $target; sha256 = $Sha256; size = $actualSize; received = $Received }
}

function Expand-FleetGzipFile {
    param([string]$Source, [string]$Destination)
    $compressed = [IO.File]::OpenRead($Source)
    try {
        $gzip = New-Object System.IO.Compression.GZipStream -ArgumentList $compressed, ([IO.Compression.CompressionMode]::Decompress)
        $output = [IO.File]::Create($Destination)
        try { $gzip.CopyTo($output) } finally { $output.Dispose(); $gzip.Dispose() }
    } finally { $compressed.Dispose() }
}

# ---------------------------------------------------------------------------------------------------------------
# Services, junctions and command lines.

function ConvertTo-FleetCommandLineArgument {
    # Quote one argument so CommandLineToArgvW (what Go and the C runtime use) gives it back unchanged. The same
    # algorithm, statement for statement, as fleetctl/protocol/cmdline.py quote_argument (tested under Wine with
    # hostile values; tests/node/test_contract.py keeps the two alike). The class is space, tab, LF, VT, quote.
    param([string]$Argument)
    if ($Argument.Length -gt 0 -and $Argument -cnotmatch '[ \t\n\v"]') { return $Argument }
    $slash = [char]92
    $builder = New-Object System.Text.StringBuilder
    $null = $builder.Append('"')
    $backslashes = 0
    foreach ($char in $Argument.ToCharArray()) {
        if ($char -eq $slash) { $backslashes++; continue }
        # Backslashes are literal unless they precede a quote: double them there, and escape the quote.
        if ($char -eq [char]34) { $null = $builder.Append($slash, 2 * $backslashes + 1) }
        elseif ($backslashes -gt 0) { $null = $builder.Append($slash, $backslashes) }
        $backslashes = 0
        $null = $builder.Append($char)
    }
    # Trailing backslashes precede the closing quote, so they are doubled too.
    if ($backslashes -gt 0) { $null = $builder.Append($slash, 2 * $backslashes) }
    $null = $builder.Append('"')
    return $builder.ToString()
}

function Join-FleetCommandLine {
    param([string[]]$Arguments)
    return ((@($Arguments) | ForEach-Object { ConvertTo-FleetCommandLineArgument $_ }) -join ' ')
}

# ---------------------------------------------------------------------------------------------------------------
# NSSM: a console program run as a service by nssm.exe (Set-FleetService -Hosting nssm). docs/windows.md, "NSSM".

function Install-FleetWrapper {
    # nssm.exe from the artifact cache into tools\<sha256>\: a running nssm.exe cannot be overwritten, so each build
    # gets its own directory, shared by every service that build hosts.
    param([string]$Sha256)
    $cached = Get-FleetArtifactPath $Sha256
    if (-not [IO.File]::Exists($cached)) { Throw-FleetError 'NOT_FOUND' "nssm.exe $Sha256 is not in the node's artifact cache" @{ sha256 = $Sha256 } }
    $directory = Join-Path (Join-Path $script:FleetDataRoot 'tools') $Sha256
    $target = Join-Path $directory 'nssm.exe'
    if (-not [IO.File]::Exists($target)) {
        $null = [IO.Directory]::CreateDirectory($directory)
        $temp = $target + '.' + [guid]::NewGuid().ToString('N') + '.tmp'
        [IO.File]::Copy($cached, $temp)
        [IO.File]::Move($temp, $target)
    }
    return $target
}

function Invoke-FleetNssm {
    # Runs nssm.exe with each value as one argument, quoted by ConvertTo-FleetCommandLineArgument: Process.Start
    # passes the command line as built (Windows PowerShell 5.1's native-argument passing does not escape quotes).
    # No cmd.exe is involved, so ^ & | < > mean nothing; nssm itself expands %NAME% in App* values when it starts
    # the program.
    param([string]$Nssm, [string[]]$Arguments)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $Nssm
    $info.Arguments = Join-FleetCommandLine $Arguments
    $info.UseShellExecute = $false
    $info.CreateNoWindow = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $process = [Diagnostics.Process]::Start($info)
    $errors = $process.StandardError.ReadToEndAsync()
    $output = $process.StandardOutput.ReadToEnd()
    if (-not $process.WaitForExit(60000)) {
        $process.Kill()
        Throw-FleetError 'INTERNAL' ('nssm ' + $Arguments[0] + ' did not finish within 60 s') @{ command = $Arguments[0] }
    }
    if ($process.ExitCode -ne 0) {
        $text = ([string]$errors.Result + ' ' + [string]$output).Trim()
        Throw-FleetError 'INTERNAL' ('nssm ' + ($Arguments[0..2] -join ' ') + " failed with exit code $($process.ExitCode): $text") @{
            command = $Arguments[0]; exit_code = $process.ExitCode
        }
    }
}

function Get-FleetNssmValue {
    # NSSM keeps its parameters under the service's Parameters key; REG_EXPAND_SZ values are read unexpanded, so a
    # %NAME% the user gave compares equal to itself.
    param([string]$Name, [string]$Parameter)
    $path = 'SYSTEM\CurrentControlSet\Services\' + $Name + '\Parameters'
    if ($Parameter -eq 'AppExit') { $path = $path + '\AppExit'; $Parameter = '' }
    $key = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($path)
    if ($null -eq $key) { return '' }
    try {
        $value = $key.GetValue($Parameter, $null, [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
        if ($null -eq $value) { return '' }
        return ((@($value) | ForEach-Object { [string]$_ }) -join "`n")
    } finally { $key.Dispose() }
}

function Set-FleetNssmParameters {
    # `nssm set` (or `nssm reset` for an empty value) each parameter that differs; returns the protocol names of
    # what changed. Each row: protocol name, NSSM parameter, wanted values (AppExit takes 'Default' first).
    param([string]$Nssm, [string]$Name, [object[]]$Rows)
    $changed = New-Object System.Collections.ArrayList
    foreach ($row in $Rows) {
        $values = @($row[2] | ForEach-Object { [string]$_ })
        $wanted = ($values -join "`n")
        if ($row[1] -eq 'AppExit') { $wanted = $values[1] }
        if ((Get-FleetNssmValue $Name $row[1]) -ceq $wanted) { continue }
        if ($wanted.Length -eq 0) { Invoke-FleetNssm $Nssm @('reset', $Name, $row[1]) }
        else { Invoke-FleetNssm $Nssm (@('set', $Name, $row[1]) + $values) }
        if ($changed -notcontains $row[0]) { $null = $changed.Add($row[0]) }
    }
    return , $changed.ToArray()
}

function Get-FleetServiceKey {
    param([string]$Name)
    return ('HKLM:\SYSTEM\CurrentControlSet\Services\' + $Name)
}

function Get-FleetServiceCim {
    # Fetch Win32_Service by key; a WQL filter would mean building query text from a parameter.
    param([string]$Name)
    $key = New-CimInstance -ClassName Win32_Service -Namespace 'root/cimv2' -Property @{ Name = $Name } -Key 'Name' -ClientOnly
    return (Get-CimInstance -InputObject $key)
}

function Get-FleetServiceRestarts {
    # Unexpected terminations (SCM events 7031/7034) since the current release was switched in.
    param([string]$DisplayName, $Since)
    if ($null -eq $Since) { return $null }
    $filter = @{ LogName = 'System'; ProviderName = 'Service Control Manager'; Id = @(7031, 7034); StartTime = (ConvertFrom-FleetTime $Since).ToLocalTime() }
    try {
        $events = @(Get-WinEvent -FilterHashtable $filter -ErrorAction Stop)
    } catch {
        if ($_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*') { return 0 }
        return $null
    }
    return @($events | Where-Object { $_.Properties.Count -gt 0 -and [string]$_.Properties[0].Value -eq $DisplayName }).Count
}

function Get-FleetServiceInfo {
    param([string]$Name, $Since)
    $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $service) {
        return @{ exists = $false; state = $null; pid = $null; start_time = $null; restarts = $null; recent_restarts = 0; binary_path = $null }
    }
    $cim = Get-FleetServiceCim $Name
    $processId = $null
    $startTime = $null
    if ($cim.ProcessId -gt 0) {
        $processId = [int]$cim.ProcessId
        $process = Get-Process -Id $processId -ErrorAction SilentlyContinue
        if ($null -ne $process) { $startTime = Get-FleetTime $process.StartTime }
    }
    return @{
        exists = $true; state = [string]$service.Status; pid = $processId; start_time = $startTime
        restarts = (Get-FleetServiceRestarts $service.DisplayName $Since); binary_path = [string]$cim.PathName
        # The crash-loop window (fleetctl status): unexpected exits in the last 10 minutes.
        recent_restarts = (Get-FleetServiceRestarts $service.DisplayName (Get-FleetTime ([datetime]::UtcNow.AddMinutes(-10))))
    }
}

function Get-FleetJunctionTarget {
    param([string]$Path)
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    if ($item.LinkType -ne 'Junction' -and $item.LinkType -ne 'SymbolicLink') {
        Throw-FleetError 'INVALID_ARGUMENT' "$Path exists and is not a junction; refusing to replace it" @{ path = $Path }
    }
    # 5.1 returns Target as a list, 7 as a string; both may carry the \??\ prefix of the reparse data.
    $target = [string](@($item.Target)[0])
    return ($target -replace '^\\\?\?\\', '').TrimEnd('\')
}

function Find-FleetRelease {
    param([hashtable]$State, [string]$Release)
    foreach ($entry in @($State.releases)) { if ($entry.release -eq $Release) { return $entry } }
    return $null
}

function Get-FleetLockView {
    param($Lock)
    if ($null -eq $Lock) { return $null }
    $view = @{ owner = $Lock.owner; deploy_id = $Lock.deploy_id; acquired_at = $Lock.acquired_at; expires_at = $Lock.expires_at }
    foreach ($key in @('renewed_at', 'ttl_seconds', 'process', 'reason')) {
        $view[$key] = $null
        if ($Lock.ContainsKey($key)) { $view[$key] = $Lock[$key] }
    }
    $view.expired = ((ConvertFrom-FleetTime $Lock.expires_at) -le [datetime]::UtcNow)
    return $view
}

function Get-FleetLockDecision {
    # The one rule of Lock-FleetApp: take a free lock, renew ours, replace an expired one, take over a live holder
    # only when the caller names exactly its deploy id, never take over a change freeze. The same statements as
    # fleetctl/protocol/locking.py lock_decision, in the subset tests/node/pwsh_subset.py runs; the contract test
    # compares the two on every case. Deploy ids compare case-sensitively (-ceq).
    param([string]$HeldBy, [bool]$Expired, [bool]$Freeze, [string]$DeployId, [string]$TakeOver)
    if ($HeldBy -ceq '') { return 'take' }
    if ($HeldBy -ceq $DeployId) { return 'renew' }
    if ($Expired) { return 'replace-expired' }
    if ($Freeze) { return 'held' }
    if ($TakeOver -ceq '') { return 'held' }
    if ($TakeOver -ceq $HeldBy) { return 'take-over' }
    return 'held'
}

# ---------------------------------------------------------------------------------------------------------------
# The operations (protocol.py OPERATIONS, in the same order). Optional parameters get their defaults in the body,
# not in param(): a controller that passes $null then gets the default too (and tree-sitter-pwsh, which the
# contract test uses, mis-reads a default value followed by another parameter).

function Get-FleetFacts {
    [CmdletBinding()]
    param()
    Invoke-FleetOperation {
        $os = Get-CimInstance -ClassName Win32_OperatingSystem
        $drives = @{}
        foreach ($drive in [IO.DriveInfo]::GetDrives()) {
            if ($drive.DriveType -eq 'Fixed' -and $drive.IsReady) { $drives[$drive.Name.Substring(0, 1)] = [long]$drive.AvailableFreeSpace }
        }
        return @{
            hostname = $env:COMPUTERNAME; os_name = [string]$os.Caption; os_version = [string]$os.Version
            os_build = [string]$os.BuildNumber; ps_version = $PSVersionTable.PSVersion.ToString(); drives = $drives
            utc_now = (Get-FleetTime); module_version = $script:FleetProtocolVersion; lab = $false
        }
    }
}

function Lock-FleetApp {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Owner,
        [Parameter(Mandatory = $true)][string]$DeployId,
        [Parameter(Mandatory = $true)][int]$TtlSeconds,
        [string]$Process,
        [string]$Reason,
        [string]$TakeOver
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        if ($TtlSeconds -le 0) { Throw-FleetError 'INVALID_ARGUMENT' 'TtlSeconds must be positive' @{ parameter = 'TtlSeconds' } }
        Use-FleetAppMutex $App {
            $path = Join-Path (Get-FleetAppDirectory $App) 'lock.json'
            $existing = Get-FleetLockView (Read-FleetJsonFile $path)
            $now = [datetime]::UtcNow
            $heldBy = ''; $expired = $false; $freeze = $false
            if ($null -ne $existing) {
                $heldBy = [string]$existing.deploy_id; $expired = [bool]$existing.expired
                $freeze = -not [string]::IsNullOrEmpty([string]$existing.reason)
            }
            $decision = Get-FleetLockDecision -HeldBy $heldBy -Expired $expired -Freeze $freeze -DeployId $DeployId -TakeOver ([string]$TakeOver)
            if ($decision -eq 'held') {
                $what = 'locked'
                if ($freeze) { $what = 'frozen' }
                Throw-FleetError 'LOCK_HELD' "$App is $what by $($existing.owner) (deploy $($existing.deploy_id)) until $($existing.expires_at)" @{ holder = $existing }
            }
            $stamp = Get-FleetTime $now
            $acquiredAt = $stamp
            if ($decision -eq 'renew') { $acquiredAt = $existing.acquired_at }  # our own lock: keep when it was taken
            $takenOver = $null
            if ($decision -eq 'replace-expired' -or $decision -eq 'take-over') { $takenOver = $existing }
            $processValue = $null; if (-not [string]::IsNullOrEmpty($Process)) { $processValue = $Process }
            $reasonValue = $null; if (-not [string]::IsNullOrEmpty($Reason)) { $reasonValue = $Reason }
            $lock = @{ owner = $Owner; deploy_id = $DeployId; acquired_at = $acquiredAt; renewed_at = $stamp
                expires_at = (Get-FleetTime $now.AddSeconds($TtlSeconds)); ttl_seconds = $TtlSeconds
                process = $processValue; reason = $reasonValue }
            Write-FleetJsonFile $path $lock
            return @{ lock = $lock; taken_over = $takenOver }
        }
    }
}

function Update-FleetAppLock {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$DeployId,
        [Parameter(Mandatory = $true)][int]$TtlSeconds
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        if ($TtlSeconds -le 0) { Throw-FleetError 'INVALID_ARGUMENT' 'TtlSeconds must be positive' @{ parameter = 'TtlSeconds' } }
        Use-FleetAppMutex $App {
            $path = Join-Path (Get-FleetAppDirectory $App) 'lock.json'
            $existing = Get-FleetLockView (Read-FleetJsonFile $path)
            # Gone (released or replaced): a renewal never re-takes a lock another run may have used meanwhile.
            if ($null -eq $existing -or -not ($existing.deploy_id -ceq $DeployId)) {
                Throw-FleetError 'LOCK_NOT_OWNED' "$App is not locked by deploy $DeployId" @{ holder = $existing }
            }
            $now = [datetime]::UtcNow
            $lock = @{ owner = $existing.owner; deploy_id = $DeployId; acquired_at = $existing.acquired_at
                renewed_at = (Get-FleetTime $now); expires_at = (Get-FleetTime $now.AddSeconds($TtlSeconds))
                ttl_seconds = $TtlSeconds; process = $existing.process; reason = $existing.reason }
            Write-FleetJsonFile $path $lock
            return @{ lock = $lock }
        }
    }
}

function Unlock-FleetApp {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$DeployId
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Use-FleetAppMutex $App {
            $path = Join-Path (Get-FleetAppDirectory $App) 'lock.json'
            $existing = Get-FleetLockView (Read-FleetJsonFile $path)
            if ($null -eq $existing) { return @{ released = $false } }
            # Compare and delete: only the holder's own deploy id releases a lock.
            if (-not ($existing.deploy_id -ceq $DeployId)) {
                Throw-FleetError 'LOCK_NOT_OWNED' "$App is locked by deploy $($existing.deploy_id), not $DeployId" @{ holder = $existing }
            }
            [IO.File]::Delete($path)
            return @{ released = $true }
        }
    }
}

function Test-FleetArtifact {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Sha256)
    Invoke-FleetOperation {
        Assert-FleetSha256 $Sha256
        $path = Get-FleetArtifactPath $Sha256
        if (-not [IO.File]::Exists($path)) { return @{ present = $false; path = $null; size = $null } }
        return @{ present = $true; path = $path; size = (New-Object System.IO.FileInfo -ArgumentList $path).Length }
    }
}

function Receive-FleetArtifact {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Sha256,
        [Parameter(Mandatory = $true)][long]$Size,
        [string]$Compression,
        # The base64 chunks arrive as pipeline input; this parameter is how an advanced function receives them.
        [Parameter(ValueFromPipeline = $true)][string]$InputObject
    )
    begin {
        # begin/process/end cannot share one Invoke-FleetOperation, so the first failure is kept and reported in end.
        $receive = @{ Failure = $null; Stream = $null; Temp = $null; Received = [long]0 }
        try {
            Assert-FleetSha256 $Sha256
            if ([string]::IsNullOrEmpty($Compression)) { $Compression = 'gzip' }
            Assert-FleetChoice $Compression @('gzip', 'none') 'Compression'
            if ($Size -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'Size must not be negative' @{ parameter = 'Size' } }
            $directory = Join-Path $script:FleetDataRoot 'artifacts'
            $null = [IO.Directory]::CreateDirectory($directory)
            if (-not [IO.File]::Exists((Get-FleetArtifactPath $Sha256))) {
                Assert-FleetFreeSpace $directory ($Size * 2)
                $receive.Temp = Join-Path $directory ($Sha256 + '.' + [guid]::NewGuid().ToString('N') + '.part')
                $receive.Stream = [IO.File]::Create($receive.Temp)
            }
        } catch { $receive.Failure = $_ }
    }
    process {
        if ($null -eq $receive.Failure -and $null -ne $receive.Stream -and -not [string]::IsNullOrEmpty($InputObject)) {
            try {
                $bytes = [Convert]::FromBase64String($InputObject)
                $receive.Stream.Write($bytes, 0, $bytes.Length)
                $receive.Received += $bytes.Length
            } catch { $receive.Failure = $_ }
        }
    }
    end {
        Invoke-FleetOperation {
            if ($null -ne $receive.Stream) { $receive.Stream.Dispose() }
            try {
                if ($null -ne $receive.Failure) { throw $receive.Failure }
                $cached = Get-FleetArtifactPath $Sha256
                if ($null -eq $receive.Temp) {
                    # Already cached (idempotent re-send): the chunks were not stored at all.
                    return @{ path = $cached; sha256 = $Sha256; size = (New-Object System.IO.FileInfo -ArgumentList $cached).Length; received = [long]0 }
                }
                $plain = $receive.Temp
                if ($Compression -eq 'gzip') {
                    $plain = $receive.Temp + '.plain'
                    try { Expand-FleetGzipFile $receive.Temp $plain } catch [System.IO.InvalidDataException] {
                        Throw-FleetError 'CHECKSUM_MISMATCH' ('received bytes are not valid gzip: ' + $_.Exception.Message) @{ expected = $Sha256 }
                    }
                }
                return (Complete-FleetArtifact $plain $Sha256 $Size $receive.Received)
            } finally {
                foreach ($leftover in @($receive.Temp, ([string]$receive.Temp + '.plain'))) {
                    if ($null -ne $receive.Temp -and [IO.File]::Exists($leftover)) { [IO.File]::Delete($leftover) }
                }
            }
        }
    }
}

$script:FleetCaPinSource = @'
using System;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
namespace FleetNode {
    // Trusts a server certificate only if it chains to one given CA (and its name matches), for one request.
    public sealed class CaPin {
        private readonly X509Certificate2 ca;
        public CaPin(X509Certificate2 ca) { this.ca = ca; }
        public RemoteCertificateValidationCallback Callback { get { return Validate; } }
        private bool Validate(object sender, X509Certificate certificate, X509Chain chain, SslPolicyErrors errors) {
            if (certificate == null || (errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0) { return false; }
            X509Chain own = new X509Chain();
            own.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            own.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
            own.ChainPolicy.ExtraStore.Add(ca);
            if (!own.Build(new X509Certificate2(certificate))) { return false; }
            X509Certificate2 root = own.ChainElements[own.ChainElements.Count - 1].Certificate;
            return root.Thumbprint == ca.Thumbprint;
        }
    }
}
'@

function Save-FleetArtifactFromUrl {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Url,
        [Parameter(Mandatory = $true)][string]$Sha256,
        [Parameter(Mandatory = $true)][long]$Size,
        [string]$Token,
        [string]$CaCertificate
    )
    # A presigned URL's query string is its signature: masked like the token in any error text.
    $query = ''
    $index = $Url.IndexOf('?')
    if ($index -ge 0) { $query = $Url.Substring($index + 1) }
    Invoke-FleetOperation -FleetSecrets @($Token, $query) -FleetBody {
        Assert-FleetSha256 $Sha256
        $uri = $null
        if (-not [Uri]::TryCreate($Url, [UriKind]::Absolute, [ref]$uri) -or @('http', 'https') -notcontains $uri.Scheme) {
            Throw-FleetError 'INVALID_ARGUMENT' 'Url must be an absolute http or https URL' @{ parameter = 'Url' }
        }
        $cached = Get-FleetArtifactPath $Sha256
        if ([IO.File]::Exists($cached)) {
            return @{ path = $cached; sha256 = $Sha256; size = (New-Object System.IO.FileInfo -ArgumentList $cached).Length; received = [long]0 }
        }
        $directory = [IO.Path]::GetDirectoryName($cached)
        $null = [IO.Directory]::CreateDirectory($directory)
        Assert-FleetFreeSpace $directory $Size
        # .NET Framework may not offer TLS 1.2 by default; adding it keeps whatever else the node allows.
        [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
        # HttpWebRequest rather than WebClient: it takes a per-request certificate callback, so pinning the
        # deploy's CA never changes trust for anything else in the process. No progress bar is involved.
        # Redirects are followed (an artifact repository handing over to its object store); HttpWebRequest drops
        # the Authorization header on each, so the token never reaches the other server.
        $request = [Net.HttpWebRequest][Net.WebRequest]::Create($uri)
        $request.Timeout = 60000
        $request.ReadWriteTimeout = 60000
        if (-not [string]::IsNullOrEmpty($Token)) { $request.Headers['Authorization'] = 'Bearer ' + $Token }
        if (-not [string]::IsNullOrEmpty($CaCertificate)) {
            if (-not ('FleetNode.CaPin' -as [type])) { Add-Type -TypeDefinition $script:FleetCaPinSource }
            $pem = [regex]::Match($CaCertificate, '-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----')
            if (-not $pem.Success) { Throw-FleetError 'INVALID_ARGUMENT' 'CaCertificate must be a PEM certificate' @{ parameter = 'CaCertificate' } }
            $der = [Convert]::FromBase64String(($pem.Groups[1].Value -replace '\s', ''))
            $ca = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2 -ArgumentList (, $der)
            $request.ServerCertificateValidationCallback = (New-Object FleetNode.CaPin -ArgumentList $ca).Callback
        }
        $temp = $cached + '.' + [guid]::NewGuid().ToString('N') + '.part'
        $received = [long]0
        try {
            try { $response = $request.GetResponse() } catch {
                $web = $_.Exception
                while ($null -ne $web -and -not ($web -is [Net.WebException])) { $web = $web.InnerException }
                $status = $null
                $reason = $_.Exception.Message
                if ($null -ne $web) {
                    $reason = [string]$web.Status
                    if ($null -ne $web.Response) { $status = [int]([Net.HttpWebResponse]$web.Response).StatusCode }
                }
                Throw-FleetError 'DOWNLOAD_FAILED' "download of the artifact failed: $reason" @{ status = $status; reason = $reason }
            }
            try {
                $body = $response.GetResponseStream()
                $file = [IO.File]::Create($temp)
                try {
                    $buffer = New-Object byte[] 65536
                    while (($count = $body.Read($buffer, 0, $buffer.Length)) -gt 0) {
                        $file.Write($buffer, 0, $count)
                        $received += $count
                        # A wrong or hostile URL must not fill the disk: stop as soon as it exceeds the size.
                        if ($received -gt $Size) { break }
                    }
                } finally { $file.Dispose() }
            } finally { $response.Dispose() }
            return (Complete-FleetArtifact $temp $Sha256 $Size $received)
        } finally {
            if ([IO.File]::Exists($temp)) { [IO.File]::Delete($temp) }
        }
    }
}

function Install-FleetRelease {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [Parameter(Mandatory = $true)][string]$Release,
        [Parameter(Mandatory = $true)][string]$Version,
        [Parameter(Mandatory = $true)][string]$Sha256,
        [Parameter(Mandatory = $true)][string]$ExeName,
        [hashtable]$Files
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        Assert-FleetName $Release 'Release' -AllowPlus
        Assert-FleetSha256 $Sha256
        if ($ExeName -notmatch '^[A-Za-z0-9][A-Za-z0-9._-]*\.exe$') {
            Throw-FleetError 'INVALID_ARGUMENT' 'ExeName must be a plain file name ending in .exe' @{ parameter = 'ExeName' }
        }
        $fileMap = @{}
        if ($null -ne $Files) { foreach ($key in $Files.Keys) { Assert-FleetRelativePath ([string]$key) 'Files'; $fileMap[[string]$key] = [string]$Files[$key] } }
        Use-FleetAppMutex $App {
            $state = Read-FleetAppState $App
            $known = Find-FleetRelease $state $Release
            if ($null -ne $known -and $known.sha256 -ne $Sha256) {
                Throw-FleetError 'INVALID_ARGUMENT' "release $Release is already installed from another artifact" @{ release = $Release; sha256 = $known.sha256 }
            }
            $releases = Join-Path $Root 'releases'
            $path = Join-Path $releases $Release
            $created = $false
            if (-not [IO.Directory]::Exists($path)) {
                $artifact = Get-FleetArtifactPath $Sha256
                if (-not [IO.File]::Exists($artifact)) { Throw-FleetError 'NOT_FOUND' "artifact $Sha256 is not in the node cache" @{ sha256 = $Sha256 } }
                $null = [IO.Directory]::CreateDirectory($releases)
                $null = [IO.Directory]::CreateDirectory((Join-Path (Join-Path $Root 'shared') 'logs'))
                Assert-FleetFreeSpace $releases ((New-Object System.IO.FileInfo -ArgumentList $artifact).Length)
                # Build beside the final place, then rename: a release directory is complete or absent.
                $staging = Join-Path $releases ('.' + $Release + '.' + [guid]::NewGuid().ToString('N'))
                try {
                    $null = [IO.Directory]::CreateDirectory($staging)
                    [IO.File]::Copy($artifact, (Join-Path $staging $ExeName))
                    $utf8 = New-Object System.Text.UTF8Encoding -ArgumentList $false
                    foreach ($relative in $fileMap.Keys) {
                        $target = Join-Path $staging $relative
                        $null = [IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName($target))
                        [IO.File]::WriteAllText($target, $fileMap[$relative], $utf8)
                    }
                    [IO.Directory]::Move($staging, $path)
                    $created = $true
                } finally {
                    if ([IO.Directory]::Exists($staging)) { [IO.Directory]::Delete($staging, $true) }
                }
            }
            if ($null -eq $known) {
                $entry = @{ release = $Release; version = $Version; sha256 = $Sha256; exe_name = $ExeName; installed_at = (Get-FleetTime) }
                $state.releases = @($state.releases) + @($entry)
                $state.root = $Root
                Add-FleetHistory $state 'install' $Release
                Write-FleetAppState $App $state
            }
            return @{ release = $Release; path = $path; created = $created }
        }
    }
}

function Set-FleetService {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [string]$DisplayName,
        [string]$Description,
        [Parameter(Mandatory = $true)][string]$BinaryPath,
        [string[]]$Arguments,
        [hashtable]$Environment,
        [string]$Account,
        [string]$Password,
        [string]$StartType,
        [string[]]$Dependencies,
        [int]$RecoveryRestartSeconds,
        [int]$RecoveryResetSeconds,
        [string[]]$RecoveryActions,
        [int]$StopTimeoutSeconds,
        [string]$Hosting,
        [string]$WrapperSha256,
        [string]$WorkingDirectory,
        [string]$StdoutPath,
        [string]$StderrPath,
        [long]$RotateBytes,
        [int]$RestartDelayMilliseconds,
        [int]$ThrottleMilliseconds
    )
    # Read here: inside the operation body $PSBoundParameters would be the script block's own (empty) set.
    if (-not $PSBoundParameters.ContainsKey('RecoveryResetSeconds')) { $RecoveryResetSeconds = 86400 }
    if (-not $PSBoundParameters.ContainsKey('ThrottleMilliseconds')) { $ThrottleMilliseconds = 1500 }
    Invoke-FleetOperation -FleetSecrets @($Password) -FleetBody {
        Assert-FleetName $Name 'Name'
        if (-not [IO.Path]::IsPathRooted($BinaryPath)) { Throw-FleetError 'INVALID_ARGUMENT' 'BinaryPath must be a full path' @{ parameter = 'BinaryPath' } }
        if ([string]::IsNullOrEmpty($Hosting)) { $Hosting = 'native' }
        Assert-FleetChoice $Hosting @('native', 'nssm') 'Hosting'
        $nssm = $null
        if ($Hosting -eq 'nssm') {
            Assert-FleetSha256 $WrapperSha256
            foreach ($pair in @(@('StdoutPath', $StdoutPath), @('StderrPath', $StderrPath), @('WorkingDirectory', $WorkingDirectory))) {
                if (-not [string]::IsNullOrEmpty($pair[1]) -and -not [IO.Path]::IsPathRooted($pair[1])) {
                    Throw-FleetError 'INVALID_ARGUMENT' ($pair[0] + ' must be a full path') @{ parameter = $pair[0] }
                }
            }
            $nssm = Install-FleetWrapper $WrapperSha256
            if ([string]::IsNullOrEmpty($WorkingDirectory)) { $WorkingDirectory = [IO.Path]::GetDirectoryName($BinaryPath) }
        } elseif (-not [string]::IsNullOrEmpty($WorkingDirectory)) {
            # The SCM starts every native service in %SystemRoot%\System32 and has no setting to change that.
            Throw-FleetError 'INVALID_ARGUMENT' 'WorkingDirectory needs Hosting nssm: the SCM has no working directory setting' @{ parameter = 'WorkingDirectory' }
        }
        if ([string]::IsNullOrEmpty($StartType)) { $StartType = 'auto' }
        Assert-FleetChoice $StartType @('auto', 'delayed-auto', 'manual', 'disabled') 'StartType'
        if ([string]::IsNullOrEmpty($Account)) { $Account = 'LocalSystem' }
        if ([string]::IsNullOrEmpty($DisplayName)) { $DisplayName = $Name }
        $imagePath = Join-FleetCommandLine (@($BinaryPath) + @($Arguments | Where-Object { $null -ne $_ }))
        if ($null -ne $nssm) { $imagePath = ConvertTo-FleetCommandLineArgument $nssm }
        $startMode = @{ 'auto' = 'Automatic'; 'delayed-auto' = 'Automatic'; 'manual' = 'Manual'; 'disabled' = 'Disabled' }[$StartType]
        $key = Get-FleetServiceKey $Name
        $changed = New-Object System.Collections.ArrayList
        $created = $false
        $existing = Get-Service -Name $Name -ErrorAction SilentlyContinue
        if ($null -eq $existing -and $null -ne $nssm) {
            # nssm install creates the service with nssm.exe as its ImagePath and the program as Application.
            Invoke-FleetNssm $nssm @('install', $Name, $BinaryPath)
            $created = $true
        } elseif ($null -eq $existing) {
            # New-Service hands the command line straight to CreateService: no native-argument quoting involved.
            $null = New-Service -Name $Name -BinaryPathName $imagePath -DisplayName $DisplayName -StartupType $startMode
            $created = $true
        }
        $registry = Get-ItemProperty -LiteralPath $key
        $cim = Get-FleetServiceCim $Name
        # Win32_Service.Change calls ChangeServiceConfig with each value as an argument (no sc.exe command line),
        # which matters for paths with spaces and for the password.
        $change = @{}
        if ($cim.PathName -ne $imagePath -and ($null -ne $nssm -or ([string]$cim.PathName) -like '*\nssm.exe"')) {
            # Between native and nssm hosting (or to another nssm build): the SCM's command line changes wholesale.
            $change.PathName = $imagePath; $null = $changed.Add('Hosting')
        } elseif ($cim.PathName -ne $imagePath) {
            $change.PathName = $imagePath
            # The SCM keeps one command line; tell which half moved by its quoted-exe prefix.
            $exePart = ConvertTo-FleetCommandLineArgument $BinaryPath
            if (-not ([string]$cim.PathName).StartsWith($exePart, [StringComparison]::OrdinalIgnoreCase)) { $null = $changed.Add('BinaryPath') }
            if (([string]$cim.PathName).Length -lt $exePart.Length -or ([string]$cim.PathName).Substring($exePart.Length) -ne $imagePath.Substring($exePart.Length)) { $null = $changed.Add('Arguments') }
        }
        if ($cim.DisplayName -ne $DisplayName) { $change.DisplayName = $DisplayName; $null = $changed.Add('DisplayName') }
        if ($cim.StartMode -notlike ($startMode.Substring(0, 4) + '*')) { $change.StartMode = $startMode; $null = $changed.Add('StartType') }
        $wantDependencies = @($Dependencies | Where-Object { -not [string]::IsNullOrEmpty($_) })
        $haveDependencies = @()
        if ($registry.PSObject.Properties.Name -contains 'DependOnService') { $haveDependencies = @($registry.DependOnService) }
        if ((@($wantDependencies) -join '|') -ne (@($haveDependencies) -join '|')) { $change.ServiceDependencies = [string[]]$wantDependencies; $null = $changed.Add('Dependencies') }
        if ($cim.StartName -ne $Account) {
            $change.StartName = $Account; $null = $changed.Add('Account')
            # Built-in service accounts take an empty password in ChangeServiceConfig.
            if ($Account -match '^NT AUTHORITY\\') { $change.StartPassword = '' }
        }
        if (-not [string]::IsNullOrEmpty($Password) -and $Account -notmatch '^(LocalSystem|NT AUTHORITY\\)') {
            # A password cannot be compared, so it is set on every call; it is not reported as a change.
            $change.StartName = $Account; $change.StartPassword = $Password
        }
        if ($change.Count -gt 0) {
            $outcome = Invoke-CimMethod -InputObject $cim -MethodName Change -Arguments $change
            if ($outcome.ReturnValue -ne 0) { Throw-FleetError 'INVALID_ARGUMENT' "Win32_Service.Change failed with code $($outcome.ReturnValue)" @{ return_value = [int]$outcome.ReturnValue } }
        }
        if (-not [string]::IsNullOrEmpty($Description) -and $cim.Description -ne $Description) {
            Set-Service -Name $Name -Description $Description; $null = $changed.Add('Description')
        }
        $delayed = ($registry.PSObject.Properties.Name -contains 'DelayedAutostart') -and ($registry.DelayedAutostart -eq 1)
        if ($StartType -eq 'auto' -or $StartType -eq 'delayed-auto') {
            if ($delayed -ne ($StartType -eq 'delayed-auto')) {
                # Delayed auto-start is not reachable through Set-Service on 5.1; sc.exe gets validated tokens only.
                $null = & sc.exe @('config', $Name, 'start=', $StartType)
                if ($LASTEXITCODE -ne 0) { Throw-FleetError 'INTERNAL' "sc.exe config start= failed with exit code $LASTEXITCODE" @{} }
                if ($changed -notcontains 'StartType') { $null = $changed.Add('StartType') }
            }
        }
        # The SCM reads a service's Environment value (REG_MULTI_SZ of NAME=value) each time it starts the process.
        $wantEnvironment = @()
        if ($null -ne $Environment) { $wantEnvironment = @($Environment.Keys | Sort-Object | ForEach-Object { [string]$_ + '=' + [string]$Environment[$_] }) }
        $pairs = $wantEnvironment
        if ($null -ne $nssm) { $wantEnvironment = @() }  # nssm passes them to the program as AppEnvironmentExtra
        $haveEnvironment = @()
        if ($registry.PSObject.Properties.Name -contains 'Environment') { $haveEnvironment = @($registry.Environment) }
        if (($wantEnvironment -join "`n") -cne ($haveEnvironment -join "`n")) {
            if ($wantEnvironment.Count -gt 0) { Set-ItemProperty -LiteralPath $key -Name 'Environment' -Value ([string[]]$wantEnvironment) -Type MultiString }
            else { Remove-ItemProperty -LiteralPath $key -Name 'Environment' }
            $null = $changed.Add('Environment')
        }
        # Recovery: the actions for the first, second and subsequent failures (RecoveryActions, or a restart after
        # RecoveryRestartSeconds for all three), and non-crash exits count too. Windows cannot report recovery
        # settings back in a comparable form, so the last applied "actions|reset" is kept beside the service.
        $wantActions = @($RecoveryActions | Where-Object { -not [string]::IsNullOrEmpty($_) })
        foreach ($token in $wantActions) {
            if ($token -cnotmatch '^(restart/[0-9]{1,9}|none/0)$') { Throw-FleetError 'INVALID_ARGUMENT' 'RecoveryActions entries must be restart/<milliseconds> or none/0' @{ parameter = 'RecoveryActions' } }
        }
        $actionsField = 'RecoveryActions'
        if ($wantActions.Count -eq 0) {
            $actionsField = 'RecoveryRestartSeconds'
            if ($RecoveryRestartSeconds -gt 0) { $wantActions = @(1, 2, 3 | ForEach-Object { 'restart/' + [string]($RecoveryRestartSeconds * 1000) }) }
        }
        $recovery = ($wantActions -join '/') + '|' + [string]$RecoveryResetSeconds
        $haveRecovery = '|'
        if ($registry.PSObject.Properties.Name -contains 'FleetRecovery') { $haveRecovery = [string]$registry.FleetRecovery }
        if ($haveRecovery -ne $recovery) {
            if ($wantActions.Count -gt 0) {
                # One sc.exe token: validated <action>/<ms> pairs joined by '/', e.g. restart/5000/restart/30000/none/0.
                $null = & sc.exe @('failure', $Name, 'reset=', [string]$RecoveryResetSeconds, 'actions=', ($wantActions -join '/'))
                if ($LASTEXITCODE -ne 0) { Throw-FleetError 'INTERNAL' "sc.exe failure failed with exit code $LASTEXITCODE" @{} }
                $null = & sc.exe @('failureflag', $Name, '1')
            } else {
                # 'none/0' rather than an empty actions= value: Windows PowerShell drops empty native arguments.
                $null = & sc.exe @('failure', $Name, 'reset=', '0', 'actions=', 'none/0')
                if ($LASTEXITCODE -ne 0) { Throw-FleetError 'INTERNAL' "sc.exe failure failed with exit code $LASTEXITCODE" @{} }
            }
            Set-ItemProperty -LiteralPath $key -Name 'FleetRecovery' -Value $recovery -Type String
            $havePair = $haveRecovery.Split('|')
            if ($havePair[0] -ne ($wantActions -join '/')) { $null = $changed.Add($actionsField) }
            if ($havePair.Count -lt 2 -or $havePair[1] -ne [string]$RecoveryResetSeconds) { $null = $changed.Add('RecoveryResetSeconds') }
        }
        # Windows has no per-service stop timeout; it is kept beside the service for Stop-FleetService callers.
        $haveStop = $null
        if ($registry.PSObject.Properties.Name -contains 'FleetStopTimeoutSeconds') { $haveStop = [int]$registry.FleetStopTimeoutSeconds }
        if ($StopTimeoutSeconds -gt 0 -and $haveStop -ne $StopTimeoutSeconds) {
            Set-ItemProperty -LiteralPath $key -Name 'FleetStopTimeoutSeconds' -Value $StopTimeoutSeconds -Type DWord
            $null = $changed.Add('StopTimeoutSeconds')
        }
        if ($null -ne $nssm) {
            $rotate = '0'
            if ($RotateBytes -gt 0) { $rotate = '1' }
            $stopMs = 1500
            if ($StopTimeoutSeconds -gt 0) { $stopMs = $StopTimeoutSeconds * 1000 }
            $rows = @(
                @('BinaryPath', 'Application', @($BinaryPath)),
                @('WorkingDirectory', 'AppDirectory', @($WorkingDirectory)),
                @('Arguments', 'AppParameters', @(Join-FleetCommandLine @($Arguments | Where-Object { $null -ne $_ }))),
                @('Environment', 'AppEnvironmentExtra', $pairs),
                @('StdoutPath', 'AppStdout', @([string]$StdoutPath)),
                @('StderrPath', 'AppStderr', @([string]$StderrPath)),
                @('RotateBytes', 'AppRotateFiles', @($rotate)),
                @('RotateBytes', 'AppRotateOnline', @($rotate)),
                @('RotateBytes', 'AppRotateBytes', @([string]$RotateBytes)),
                @('Hosting', 'AppExit', @('Default', 'Restart')),
                @('RestartDelayMilliseconds', 'AppRestartDelay', @([string]$RestartDelayMilliseconds)),
                @('ThrottleMilliseconds', 'AppThrottle', @([string]$ThrottleMilliseconds)),
                @('StopTimeoutSeconds', 'AppStopMethodSkip', @('0')),
                @('StopTimeoutSeconds', 'AppStopMethodConsole', @([string]$stopMs))
            )
            foreach ($field in (Set-FleetNssmParameters $nssm $Name $rows)) { if ($changed -notcontains $field) { $null = $changed.Add($field) } }
        } elseif (Test-Path -LiteralPath ($key + '\Parameters')) {
            # Back to native hosting: NSSM's parameters would only mislead whoever reads the registry.
            Remove-Item -LiteralPath ($key + '\Parameters') -Recurse
        }
        # The service's own event source in the Application log, so what it writes through ReportEvent (Go's
        # svc/eventlog) is kept and shown by fleetctl logs --events. .NET registers its EventLogMessages.dll as
        # the message file, which renders the inserted strings as the message.
        if (-not [Diagnostics.EventLog]::SourceExists($Name)) { [Diagnostics.EventLog]::CreateEventSource($Name, 'Application') }
        if ($created) { $changed = New-Object System.Collections.ArrayList }
        return @{ created = $created; changed = [object[]]$changed.ToArray(); image_path = $imagePath }
    }
}

function Stop-FleetService {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][int]$TimeoutSeconds
    )
    Invoke-FleetOperation {
        Assert-FleetName $Name 'Name'
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
        if ($null -eq $service) { return @{ state = 'Stopped'; waited_ms = 0; was = 'Absent' } }
        $was = [string]$service.Status
        $stopSent = $false
        while ($true) {
            $service.Refresh()
            if ($service.Status -eq 'Stopped') { break }
            if (-not $stopSent -and ($service.Status -eq 'Running' -or $service.Status -eq 'Paused')) {
                # A service still starting cannot accept the stop control yet: it is retried on the next poll.
                try { $service.Stop(); $stopSent = $true } catch { $stopSent = $false }
            }
            if ($clock.Elapsed.TotalSeconds -ge $TimeoutSeconds) {
                Throw-FleetError 'SERVICE_STOP_TIMEOUT' "$Name did not stop within $TimeoutSeconds s (the process was not killed)" @{ state = [string]$service.Status; was = $was }
            }
            Start-Sleep -Milliseconds 200
        }
        return @{ state = 'Stopped'; waited_ms = [int]$clock.ElapsedMilliseconds; was = $was }
    }
}

function Start-FleetService {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][int]$TimeoutSeconds
    )
    Invoke-FleetOperation {
        Assert-FleetName $Name 'Name'
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
        if ($null -eq $service) { Throw-FleetError 'NOT_FOUND' "service $Name does not exist" @{ name = $Name } }
        $was = [string]$service.Status
        if ($service.Status -ne 'Running') {
            if ($service.Status -ne 'StartPending') {
                try { $service.Start() } catch {
                    # StartService itself fails for e.g. 1053 (no service control dispatcher within the SCM's
                    # 30 s: a console exe), 1069 (logon failure), 1058 (disabled).
                    $win32 = $_.Exception
                    while ($null -ne $win32 -and -not ($win32 -is [ComponentModel.Win32Exception])) { $win32 = $win32.InnerException }
                    $details = @{ state = 'Stopped'; win32_error = $null; reason = $_.Exception.Message }
                    if ($null -ne $win32) { $details.win32_error = $win32.NativeErrorCode; $details.reason = $win32.Message }
                    Throw-FleetError 'SERVICE_START_FAILED' "$Name failed to start: $($details.reason)" $details
                }
            }
            while ($true) {
                $service.Refresh()
                if ($service.Status -eq 'Running') { break }
                if ($service.Status -eq 'Stopped') {
                    $cim = Get-FleetServiceCim $Name
                    Throw-FleetError 'SERVICE_START_FAILED' "$Name stopped while starting (exit code $($cim.ExitCode))" @{
                        state = 'Stopped'; exit_code = [int]$cim.ExitCode; service_exit_code = [int]$cim.ServiceSpecificExitCode
                    }
                }
                if ($clock.Elapsed.TotalSeconds -ge $TimeoutSeconds) {
                    Throw-FleetError 'SERVICE_START_TIMEOUT' "$Name did not reach Running within $TimeoutSeconds s" @{ state = [string]$service.Status }
                }
                Start-Sleep -Milliseconds 200
            }
        }
        $cim = Get-FleetServiceCim $Name
        return @{ state = 'Running'; pid = [int]$cim.ProcessId; waited_ms = [int]$clock.ElapsedMilliseconds; was = $was }
    }
}

function Set-FleetJunction {
    # Point <Root>\<Name> at Target. A junction cannot be replaced in place: make the new one beside it, drop the
    # old link (never its target's files), then rename the new one into place.
    param([string]$Root, [string]$Name, [string]$Target)
    $link = Join-Path $Root $Name
    $pointsAt = Get-FleetJunctionTarget $link
    if ($null -ne $pointsAt -and $pointsAt -eq $Target.TrimEnd('\')) { return }
    $fresh = Join-Path $Root ('.' + $Name + '.' + [guid]::NewGuid().ToString('N'))
    $null = New-Item -ItemType Junction -Path $fresh -Value $Target
    if ($null -ne $pointsAt) { [IO.Directory]::Delete($link, $false) }
    [IO.Directory]::Move($fresh, $link)
}

function Get-FleetColourName {
    param([string]$Colour)
    if (@('blue', 'green') -notcontains $Colour) { Throw-FleetError 'INVALID_ARGUMENT' 'Colour must be blue or green' @{ parameter = 'Colour' } }
    return $Colour.ToLowerInvariant()
}

function Switch-FleetRelease {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [Parameter(Mandatory = $true)][string]$Release,
        [string]$Colour
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        Assert-FleetName $Release 'Release' -AllowPlus
        $linkName = 'current'
        if (-not [string]::IsNullOrEmpty($Colour)) { $linkName = Get-FleetColourName $Colour }
        Use-FleetAppMutex $App {
            $target = Join-Path (Join-Path $Root 'releases') $Release
            if (-not [IO.Directory]::Exists($target)) { Throw-FleetError 'NOT_FOUND' "release $Release is not installed under $Root" @{ release = $Release } }
            Set-FleetJunction $Root $linkName $target
            $state = Read-FleetAppState $App
            if ($linkName -ne 'current') {
                # Blue-green: the colour's own junction; current/previous change when the proxy switches to it.
                $entry = $state.colours[$linkName]
                if ($null -eq $entry) { $entry = @{ release = $null; previous = $null } }
                $changed = ($entry.release -ne $Release)
                if ($changed) {
                    $entry.previous = $entry.release
                    $entry.release = $Release
                    $state.colours[$linkName] = $entry
                    $state.root = $Root
                    Add-FleetHistory $state ('switch-' + $linkName) $Release
                    Write-FleetAppState $App $state
                }
                return @{ current = $Release; previous = $entry.previous; changed = $changed }
            }
            $changed = ($state.current -ne $Release)
            if ($changed) {
                if ($null -ne $state.current) { $state.previous = $state.current }
                $state.current = $Release
                $state.root = $Root
                Add-FleetHistory $state 'switch' $Release
                Write-FleetAppState $App $state
            }
            return @{ current = $Release; previous = $state.previous; changed = $changed }
        }
    }
}

function Set-FleetReleaseVerdict {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Release,
        [Parameter(Mandatory = $true)][string]$Verdict,
        [string]$Reason
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetName $Release 'Release' -AllowPlus
        if ($Verdict -cne 'failed' -and $Verdict -cne 'cleared') { Throw-FleetError 'INVALID_ARGUMENT' 'Verdict must be failed or cleared' @{ parameter = 'Verdict' } }
        Use-FleetAppMutex $App {
            $state = Read-FleetAppState $App
            $entry = @($state.releases | Where-Object { $_.release -eq $Release }) | Select-Object -First 1
            if ($null -eq $entry) { Throw-FleetError 'NOT_FOUND' "release $Release is not recorded for $App" @{ release = $Release } }
            $mark = $null
            if ($Verdict -eq 'failed') { $mark = $(if ([string]::IsNullOrEmpty($Reason)) { 'failed its health gate' } else { $Reason }) }
            # Entries are hashtables (Read-FleetJsonFile): the key is added or overwritten in place.
            $entry['gate_failed'] = $mark
            Add-FleetHistory $state $(if ($Verdict -eq 'failed') { 'gate-failed' } else { 'gate-cleared' }) $Release
            Write-FleetAppState $App $state
            return @{ release = $Release; gate_failed = $mark }
        }
    }
}

function Switch-FleetColour {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [Parameter(Mandatory = $true)][string]$Colour,
        [Parameter(Mandatory = $true)][int]$ListenPort,
        [string]$ListenAddress,
        [Parameter(Mandatory = $true)][int]$ConnectPort,
        [string]$ConnectAddress
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        $name = Get-FleetColourName $Colour
        Use-FleetAppMutex $App {
            $state = Read-FleetAppState $App
            $entry = $state.colours[$name]
            if ($null -eq $entry -or [string]::IsNullOrEmpty($entry.release)) {
                Throw-FleetError 'NOT_FOUND' "colour $name has no release under $Root (Switch-FleetRelease -Colour first)" @{ colour = $name }
            }
            # The proxy first: the state then records what the proxy already does, and a repeated call repairs both.
            $proxy = Update-FleetPortProxy $ListenPort $ListenAddress $ConnectPort $ConnectAddress $false
            $changed = [bool]$proxy.changed -or ($state.live -ne $name) -or ($state.current -ne $entry.release)
            if ($state.current -ne $entry.release) {
                $state.previous = $state.current
                $state.current = $entry.release
                Add-FleetHistory $state 'switch' $entry.release
            }
            if ($state.live -ne $name) {
                $state.live = $name
                Add-FleetHistory $state ('live-' + $name) $entry.release
            }
            $state.root = $Root
            if ($changed) { Write-FleetAppState $App $state }
            return @{ live = $name; current = $state.current; previous = $state.previous; connect = $proxy.connect; changed = $changed }
        }
    }
}

function Get-FleetState {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [string]$ServiceName,
        [string[]]$TaskNames,
        [int]$ProxyPort
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        if ([string]::IsNullOrEmpty($ServiceName)) { $ServiceName = $App }
        Assert-FleetName $ServiceName 'ServiceName'
        $state = Read-FleetAppState $App
        $lock = Get-FleetLockView (Read-FleetJsonFile (Join-Path (Get-FleetAppDirectory $App) 'lock.json'))
        $since = $null
        foreach ($entry in @($state.history)) { if ($entry.action -eq 'switch' -and $entry.release -eq $state.current) { $since = $entry.at } }
        $releases = @($state.releases | ForEach-Object { @{ release = $_.release; version = $_.version; sha256 = $_.sha256; installed_at = $_.installed_at; gate_failed = $_.gate_failed } })
        $history = @($state.history)
        if ($history.Count -gt 50) { $history = $history[($history.Count - 50)..($history.Count - 1)] }
        $colours = @{}
        foreach ($name in @('blue', 'green')) {
            $entry = $state.colours[$name]
            if ($null -eq $entry -or [string]::IsNullOrEmpty($entry.release)) { continue }
            $colourSince = $null
            foreach ($item in @($state.history)) { if ($item.action -eq ('switch-' + $name) -and $item.release -eq $entry.release) { $colourSince = $item.at } }
            $colours[$name] = @{ release = $entry.release; previous = $entry.previous; service = (Get-FleetServiceInfo ($ServiceName + '-' + $name) $colourSince) }
        }
        return @{
            releases = [object[]]$releases; current = $state.current; previous = $state.previous
            service = (Get-FleetServiceInfo $ServiceName $since); lock = $lock; history = [object[]]$history
            tasks = [object[]]@($TaskNames | Where-Object { -not [string]::IsNullOrEmpty($_) } | ForEach-Object { Assert-FleetName $_ 'TaskNames'; Get-FleetTaskStatus $_ })
            colours = $colours; live = $state.live; proxy = (Get-FleetPortProxyView $ProxyPort)
        }
    }
}

function Test-FleetHealth {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Url,
        [Parameter(Mandatory = $true)][int]$TimeoutSeconds
    )
    Invoke-FleetOperation {
        $uri = $null
        if (-not [Uri]::TryCreate($Url, [UriKind]::Absolute, [ref]$uri) -or @('http', 'https') -notcontains $uri.Scheme) {
            Throw-FleetError 'INVALID_ARGUMENT' 'Url must be an absolute http or https URL' @{ parameter = 'Url' }
        }
        $clock = [Diagnostics.Stopwatch]::StartNew()
        # Redirects are followed (an artifact repository handing over to its object store); HttpWebRequest drops
        # the Authorization header on each, so the token never reaches the other server.
        $request = [Net.HttpWebRequest][Net.WebRequest]::Create($uri)
        $request.Timeout = $TimeoutSeconds * 1000
        $request.ReadWriteTimeout = $TimeoutSeconds * 1000
        $status = $null
        $body = ''
        $problem = $null
        $response = $null
        try { $response = [Net.HttpWebResponse]$request.GetResponse() } catch {
            $web = $_.Exception
            while ($null -ne $web -and -not ($web -is [Net.WebException])) { $web = $web.InnerException }
            # A 4xx/5xx is still an answer: report its status and body, not an error.
            if ($null -ne $web -and $null -ne $web.Response) { $response = [Net.HttpWebResponse]$web.Response }
            else { $problem = $_.Exception.Message }
        }
        if ($null -ne $response) {
            try {
                $status = [int]$response.StatusCode
                $stream = $response.GetResponseStream()
                $buffer = New-Object byte[] 4096
                $filled = 0
                while ($filled -lt $buffer.Length -and ($count = $stream.Read($buffer, $filled, $buffer.Length - $filled)) -gt 0) { $filled += $count }
                $body = [Text.Encoding]::UTF8.GetString($buffer, 0, $filled)
            } catch { $problem = $_.Exception.Message } finally { $response.Dispose() }
        }
        return @{ status = $status; body = $body; elapsed_ms = [int]$clock.ElapsedMilliseconds; error = $problem }
    }
}

function Remove-FleetRelease {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [int]$Keep,
        [string]$Release
    )
    # Read here: inside the operation body $PSBoundParameters would be the script block's own (empty) set.
    $byKeep = $PSBoundParameters.ContainsKey('Keep') -and -not $PSBoundParameters.ContainsKey('Release')
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        if (-not $byKeep -and [string]::IsNullOrEmpty($Release)) { Throw-FleetError 'INVALID_ARGUMENT' 'give Keep or Release' @{} }
        if ($byKeep -and $Keep -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'Keep must not be negative' @{ parameter = 'Keep' } }
        if (-not $byKeep) { Assert-FleetName $Release 'Release' -AllowPlus }
        Use-FleetAppMutex $App {
            $state = Read-FleetAppState $App
            # Blue-green: the release each colour's junction points at is running or kept warm for a switch back.
            $protected = @($state.current, $state.previous, $state.colours['blue'].release, $state.colours['green'].release) | Where-Object { -not [string]::IsNullOrEmpty($_) }
            $doomed = @()
            if ($byKeep) {
                $all = @($state.releases | ForEach-Object { $_.release })
                $excess = $all.Count - $Keep
                foreach ($candidate in $all) {
                    if ($excess -le 0) { break }
                    if ($protected -notcontains $candidate) { $doomed += $candidate; $excess-- }
                }
            } elseif ($protected -contains $Release) {
                Throw-FleetError 'RELEASE_IN_USE' "release $Release is current, previous or a blue-green colour's" @{ release = $Release; current = $state.current; previous = $state.previous }
            } elseif ($null -ne (Find-FleetRelease $state $Release)) {
                $doomed = @($Release)
            }
            $removed = New-Object System.Collections.ArrayList
            $failure = $null
            # Not $release: PowerShell names are case-insensitive and that would overwrite the Release parameter.
            foreach ($victim in $doomed) {
                $path = Join-Path (Join-Path $Root 'releases') $victim
                if ([IO.Directory]::Exists($path)) {
                    # Rename first: Windows refuses while a file inside is in use, and then nothing was deleted.
                    $trash = Join-Path (Join-Path $Root 'releases') ('.' + $victim + '.removing.' + [guid]::NewGuid().ToString('N'))
                    try { [IO.Directory]::Move($path, $trash) } catch {
                        $failure = @{ release = $victim; path = $path; reason = $_.Exception.Message }
                        break
                    }
                    [IO.Directory]::Delete($trash, $true)
                }
                $null = $removed.Add($victim)
            }
            if ($removed.Count -gt 0) {
                $state.releases = @($state.releases | Where-Object { $removed -notcontains $_.release })
                foreach ($victim in $removed) { Add-FleetHistory $state 'remove' $victim }
                Write-FleetAppState $App $state
            }
            if ($null -ne $failure) {
                $failure.removed = [object[]]$removed.ToArray()
                Throw-FleetError 'FILE_IN_USE' "release $($failure.release) is in use and was not removed" $failure
            }
            return @{ removed = [object[]]$removed.ToArray(); kept = [object[]]@($state.releases | ForEach-Object { $_.release }) }
        }
    }
}

function ConvertTo-FleetFirewallAddress {
    # Windows stores 10.0.0.0/8 as 10.0.0.0/255.0.0.0 and a /32 as the bare address; compare in its form.
    param([string]$Address)
    $match = [regex]::Match($Address, '^(\d{1,3}(\.\d{1,3}){3})/(\d{1,2})$')
    if (-not $match.Success) { return $Address }
    $bits = [int]$match.Groups[3].Value
    if ($bits -eq 32) { return $match.Groups[1].Value }
    $mask = [uint32]0
    if ($bits -gt 0) { $mask = [uint32]([uint64]4294967295 -shl (32 - $bits) -band 4294967295) }
    $octets = @(24, 16, 8, 0) | ForEach-Object { ($mask -shr $_) -band 255 }
    return ($match.Groups[1].Value + '/' + ($octets -join '.'))
}

function Set-FleetFirewallRule {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][int]$Port,
        [string]$Protocol,
        [string]$Direction,
        [string]$Action,
        [string[]]$RemoteAddress,
        [switch]$Remove
    )
    Invoke-FleetOperation {
        Assert-FleetName $Name 'Name'
        if ([string]::IsNullOrEmpty($Protocol)) { $Protocol = 'TCP' }
        if ([string]::IsNullOrEmpty($Direction)) { $Direction = 'Inbound' }
        if ([string]::IsNullOrEmpty($Action)) { $Action = 'Allow' }
        Assert-FleetChoice $Protocol @('TCP', 'UDP') 'Protocol'
        Assert-FleetChoice $Direction @('Inbound', 'Outbound') 'Direction'
        Assert-FleetChoice $Action @('Allow', 'Block') 'Action'
        if ($Port -lt 1 -or $Port -gt 65535) { Throw-FleetError 'INVALID_ARGUMENT' 'Port must be 1-65535' @{ parameter = 'Port' } }
        $rule = Get-NetFirewallRule -Name $Name -ErrorAction SilentlyContinue
        if ($Remove) {
            if ($null -eq $rule) { return @{ changed = $false } }
            Remove-NetFirewallRule -Name $Name
            return @{ changed = $true }
        }
        $addresses = @($RemoteAddress | Where-Object { -not [string]::IsNullOrEmpty($_) } | ForEach-Object { ConvertTo-FleetFirewallAddress $_ })
        if ($addresses.Count -eq 0) { $addresses = @('Any') }
        $settings = @{
            Direction = $Direction; Action = $Action; Protocol = $Protocol; LocalPort = [string]$Port
            RemoteAddress = [string[]]$addresses; Profile = 'Any'; Enabled = 'True'
        }
        if ($null -eq $rule) {
            $null = New-NetFirewallRule -Name $Name -DisplayName $Name @settings
            return @{ changed = $true }
        }
        $ports = Get-NetFirewallPortFilter -AssociatedNetFirewallRule $rule
        $remote = Get-NetFirewallAddressFilter -AssociatedNetFirewallRule $rule
        $same = ([string]$rule.Direction -eq $Direction) -and ([string]$rule.Action -eq $Action) -and
            ([string]$rule.Enabled -eq 'True') -and ([string]$ports.Protocol -eq $Protocol) -and
            ((@($ports.LocalPort) -join ',') -eq [string]$Port) -and
            ((@($remote.RemoteAddress) | Sort-Object) -join ',') -eq ((@($addresses) | Sort-Object) -join ',')
        if ($same) { return @{ changed = $false } }
        Set-NetFirewallRule -Name $Name @settings
        return @{ changed = $true }
    }
}

function Get-FleetTaskStatus {
    # One task of the \fleetctl\ folder as Get-FleetState reports it. 0x41303 (SCHED_S_TASK_HAS_NOT_RUN) is "never".
    param([string]$Name)
    $task = Get-ScheduledTask -TaskName $Name -TaskPath '\fleetctl\' -ErrorAction SilentlyContinue
    if ($null -eq $task) { return @{ name = $Name; exists = $false; state = $null; last_run = $null; last_result = $null; next_run = $null } }
    $info = Get-ScheduledTaskInfo -TaskName $Name -TaskPath '\fleetctl\'
    $lastRun = $null
    $result = $null
    # Task Scheduler reports "never ran" as a date in 1999.
    if ($null -ne $info.LastRunTime -and $info.LastRunTime.Year -ge 2000) { $lastRun = Get-FleetTime $info.LastRunTime; $result = [int]$info.LastTaskResult }
    if ($result -eq 267011) { $result = $null }
    $nextRun = $null
    if ($null -ne $info.NextRunTime -and $info.NextRunTime.Year -ge 2000) { $nextRun = Get-FleetTime $info.NextRunTime }
    return @{ name = $Name; exists = $true; state = [string]$task.State; last_run = $lastRun; last_result = $result; next_run = $nextRun }
}

function Set-FleetScheduledTask {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [string]$Execute,
        [string[]]$Arguments,
        [string]$At,
        [switch]$AtStartup,
        [int]$EveryMinutes,
        [string]$User,
        [int]$RestartCount,
        [int]$RestartIntervalMinutes,
        [int]$ExecutionTimeLimitMinutes,
        [switch]$Remove,
        [switch]$RunNow
    )
    # Read here: inside the operation body $PSBoundParameters would be the script block's own (empty) set.
    if (-not $PSBoundParameters.ContainsKey('ExecutionTimeLimitMinutes')) { $ExecutionTimeLimitMinutes = 4320 }
    if (-not $PSBoundParameters.ContainsKey('RestartIntervalMinutes')) { $RestartIntervalMinutes = 1 }
    Invoke-FleetOperation {
        Assert-FleetName $Name 'Name'
        # fleetctl's tasks live in their own folder, so a name can never collide with the system's tasks.
        $folder = '\fleetctl\'
        $task = Get-ScheduledTask -TaskName $Name -TaskPath $folder -ErrorAction SilentlyContinue
        $changed = $false
        if ($Remove) {
            if ($null -ne $task) { Unregister-ScheduledTask -TaskName $Name -TaskPath $folder -Confirm:$false; $changed = $true }
            return @{ changed = $changed; last_run = $null; last_result = $null }
        }
        if (-not [string]::IsNullOrEmpty($Execute)) {
            if (-not [string]::IsNullOrEmpty($At) -and $At -notmatch '^([01][0-9]|2[0-3]):[0-5][0-9]$') { Throw-FleetError 'INVALID_ARGUMENT' 'At must be HH:MM (24 h)' @{ parameter = 'At' } }
            if ([string]::IsNullOrEmpty($At) -and -not $AtStartup -and $EveryMinutes -le 0) { Throw-FleetError 'INVALID_ARGUMENT' 'give a trigger: At, AtStartup or EveryMinutes' @{} }
            if ($RestartCount -lt 0 -or $RestartIntervalMinutes -lt 1 -or $ExecutionTimeLimitMinutes -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'RestartCount/ExecutionTimeLimitMinutes must be 0 or more, RestartIntervalMinutes 1 or more' @{} }
            if ([string]::IsNullOrEmpty($User)) { $User = 'SYSTEM' }
            $argumentLine = Join-FleetCommandLine @($Arguments | Where-Object { $null -ne $_ })
            # Task Scheduler cannot report its triggers and settings back in a comparable form across versions,
            # so the definition's canonical text is kept in the task's Description and compared instead.
            $fingerprint = 'fleetctl: ' + (ConvertTo-Json -Compress -InputObject ([ordered]@{
                execute = $Execute; arguments = $argumentLine; at = $At; at_startup = [bool]$AtStartup
                every_minutes = $EveryMinutes; user = $User; restart_count = $RestartCount
                restart_interval_minutes = $RestartIntervalMinutes; execution_time_limit_minutes = $ExecutionTimeLimitMinutes
            }))
            if ($null -eq $task -or [string]$task.Description -cne $fingerprint) {
                $taskAction = New-ScheduledTaskAction -Execute $Execute
                # The arguments are one command line, built by the quoting function; Task Scheduler starts the
                # program with it directly (no cmd.exe) after expanding %NAME% in it.
                if ($argumentLine.Length -gt 0) { $taskAction = New-ScheduledTaskAction -Execute $Execute -Argument $argumentLine }
                $triggers = @()
                if ($AtStartup) { $triggers += New-ScheduledTaskTrigger -AtStartup }
                if (-not [string]::IsNullOrEmpty($At)) {
                    $when = [datetime]::ParseExact($At, 'HH:mm', [Globalization.CultureInfo]::InvariantCulture)
                    $triggers += New-ScheduledTaskTrigger -Daily -At $when
                }
                if ($EveryMinutes -gt 0) {
                    # A one-time trigger from now, repeated: without -RepetitionDuration it repeats indefinitely
                    # (Server 2016 and later; [TimeSpan]::MaxValue is refused there).
                    $triggers += New-ScheduledTaskTrigger -Once -At ([datetime]::Now) -RepetitionInterval (New-TimeSpan -Minutes $EveryMinutes)
                }
                $limit = New-TimeSpan -Minutes $ExecutionTimeLimitMinutes  # 0: PT0S, no limit
                $settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit $limit -StartWhenAvailable -MultipleInstances IgnoreNew
                if ($RestartCount -gt 0) {
                    $settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit $limit -StartWhenAvailable -MultipleInstances IgnoreNew -RestartCount $RestartCount -RestartInterval (New-TimeSpan -Minutes $RestartIntervalMinutes)
                }
                # Built-in accounts run as services; any other account runs S4U (no stored password, no network).
                $logon = 'S4U'
                if (@('SYSTEM', 'LOCAL SERVICE', 'NETWORK SERVICE', 'NT AUTHORITY\SYSTEM', 'NT AUTHORITY\LOCAL SERVICE', 'NT AUTHORITY\NETWORK SERVICE') -contains $User.ToUpperInvariant()) { $logon = 'ServiceAccount' }
                $principal = New-ScheduledTaskPrincipal -UserId $User -LogonType $logon -RunLevel Highest
                $null = Register-ScheduledTask -TaskName $Name -TaskPath $folder -Action $taskAction -Trigger $triggers -Settings $settings -Principal $principal -Description $fingerprint -Force
                $changed = $true
            }
        } elseif ($null -eq $task) {
            Throw-FleetError 'NOT_FOUND' "scheduled task $Name does not exist and no Execute was given" @{ name = $Name }
        }
        if ($RunNow) { Start-ScheduledTask -TaskName $Name -TaskPath $folder }
        $status = Get-FleetTaskStatus $Name
        return @{ changed = $changed; last_run = $status.last_run; last_result = $status.last_result }
    }
}

function Get-FleetPortProxyStore {
    # netsh keeps v4tov4 entries in the registry as "listenaddress/port" = "connectaddress/port"; reading them there
    # avoids parsing netsh's localised output.
    $values = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Services\PortProxy\v4tov4\tcp' -ErrorAction SilentlyContinue
    $entries = @{}
    if ($null -ne $values) {
        foreach ($property in $values.PSObject.Properties) {
            if ($property.Name -match '^[\d.]+/\d+$') { $entries[$property.Name] = [string]$property.Value }
        }
    }
    return $entries
}

function Get-FleetPortProxyView {
    param([int]$Port)
    if ($Port -le 0) { return $null }
    $entries = Get-FleetPortProxyStore
    foreach ($key in @($entries.Keys | Sort-Object)) {
        $listen = $key.Split('/')
        if ($listen[1] -ne [string]$Port) { continue }
        $connect = $entries[$key].Split('/')
        return @{ listen = ($listen[0] + ':' + $listen[1]); connect = ($connect[0] + ':' + $connect[1]) }
    }
    return $null
}

function Update-FleetPortProxy {
    param([int]$ListenPort, [string]$ListenAddress, [int]$ConnectPort, [string]$ConnectAddress, [bool]$Remove)
    if ([string]::IsNullOrEmpty($ListenAddress)) { $ListenAddress = '0.0.0.0' }
    if ([string]::IsNullOrEmpty($ConnectAddress)) { $ConnectAddress = '127.0.0.1' }
    $parsed = $null
    foreach ($pair in @(@('ListenAddress', $ListenAddress), @('ConnectAddress', $ConnectAddress))) {
        # Dotted quads only: TryParse alone accepts "1" as 0.0.0.1, which netsh would store differently.
        if ($pair[1] -notmatch '^\d{1,3}(\.\d{1,3}){3}$' -or -not [Net.IPAddress]::TryParse($pair[1], [ref]$parsed)) {
            Throw-FleetError 'INVALID_ARGUMENT' ($pair[0] + ' must be an IPv4 address') @{ parameter = $pair[0] }
        }
    }
    if ($ListenPort -lt 1 -or $ListenPort -gt 65535) { Throw-FleetError 'INVALID_ARGUMENT' 'ListenPort must be 1-65535' @{ parameter = 'ListenPort' } }
    if (-not $Remove -and ($ConnectPort -lt 1 -or $ConnectPort -gt 65535)) { Throw-FleetError 'INVALID_ARGUMENT' 'ConnectPort must be 1-65535' @{ parameter = 'ConnectPort' } }
    $entryName = $ListenAddress + '/' + [string]$ListenPort
    $current = (Get-FleetPortProxyStore)[$entryName]
    $listen = @(('listenport=' + [string]$ListenPort), ('listenaddress=' + $ListenAddress))
    if ($Remove) {
        if ($null -eq $current) { return @{ changed = $false; connect = $null } }
        $null = & netsh.exe (@('interface', 'portproxy', 'delete', 'v4tov4') + $listen)
        if ($LASTEXITCODE -ne 0) { Throw-FleetError 'INTERNAL' "netsh portproxy delete failed with exit code $LASTEXITCODE" @{} }
        return @{ changed = $true; connect = $null }
    }
    $wanted = $ConnectAddress + '/' + [string]$ConnectPort
    $connect = $ConnectAddress + ':' + [string]$ConnectPort
    if ($current -eq $wanted) { return @{ changed = $false; connect = $connect } }
    $verb = 'add'
    if ($null -ne $current) { $verb = 'set' }
    # `set` replaces the entry in one registry write: new connections go to the new target, open ones continue.
    $arguments = @('interface', 'portproxy', $verb, 'v4tov4') + $listen + @(('connectport=' + [string]$ConnectPort), ('connectaddress=' + $ConnectAddress))
    $null = & netsh.exe $arguments
    if ($LASTEXITCODE -ne 0) { Throw-FleetError 'INTERNAL' "netsh portproxy $verb failed with exit code $LASTEXITCODE" @{} }
    return @{ changed = $true; connect = $connect }
}

function Set-FleetPortProxy {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][int]$ListenPort,
        [string]$ListenAddress,
        [int]$ConnectPort,
        [string]$ConnectAddress,
        [switch]$Remove
    )
    Invoke-FleetOperation {
        return (Update-FleetPortProxy $ListenPort $ListenAddress $ConnectPort $ConnectAddress ([bool]$Remove))
    }
}

function Get-FleetEvents {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Source,
        [int]$Max
    )
    # Read here: inside the operation body $PSBoundParameters would be the script block's own (empty) set.
    if (-not $PSBoundParameters.ContainsKey('Max')) { $Max = 50 }
    Invoke-FleetOperation {
        Assert-FleetName $Source 'Source'
        if ($Max -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'Max must be 0 or more' @{ parameter = 'Max' } }
        $events = @()
        if ($Max -gt 0) {
            # A filter hashtable, not XPath text built from the parameter; newest first is Get-WinEvent's order.
            try {
                $events = @(Get-WinEvent -FilterHashtable @{ LogName = 'Application'; ProviderName = $Source } -MaxEvents $Max -ErrorAction Stop)
            } catch {
                if ($_.FullyQualifiedErrorId -notlike 'NoMatchingEventsFound*') { throw }
            }
        }
        $levels = @{ 1 = 'Critical'; 2 = 'Error'; 3 = 'Warning'; 4 = 'Information'; 0 = 'Information'; 5 = 'Verbose' }
        $list = @($events | ForEach-Object {
            $level = 'Information'
            if ($null -ne $_.Level -and $levels.ContainsKey([int]$_.Level)) { $level = $levels[[int]$_.Level] }
            # Without a message file the event has no formatted message: its inserted strings are the text.
            $message = $_.Message
            if ([string]::IsNullOrEmpty($message)) { $message = (@($_.Properties | ForEach-Object { [string]$_.Value }) -join ' ') }
            @{ time = (Get-FleetTime $_.TimeCreated); level = $level; id = [int]$_.Id; message = [string]$message }
        })
        return @{ events = [object[]]$list; note = $null }
    }
}

function Remove-FleetService {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][int]$TimeoutSeconds
    )
    Invoke-FleetOperation {
        Assert-FleetName $Name 'Name'
        $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
        if ($null -eq $service) { return @{ removed = $false; was = 'Absent' } }
        $was = [string]$service.Status
        # An open handle would leave the service "marked for deletion" instead of deleting it.
        $service.Dispose()
        $stopped = ConvertTo-FleetHashtable (ConvertFrom-Json -InputObject (Stop-FleetService -Name $Name -TimeoutSeconds $TimeoutSeconds))
        if (-not $stopped.ok) { Throw-FleetError $stopped.error.code $stopped.error.message $stopped.error.details }
        # DeleteService through sc.exe with the validated name as its one argument; NSSM's Parameters key lives
        # under the service's key and goes with it. 1060: already gone.
        $null = & sc.exe @('delete', $Name)
        if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 1060) { Throw-FleetError 'INTERNAL' "sc.exe delete failed with exit code $LASTEXITCODE" @{} }
        return @{ removed = $true; was = $was }
    }
}

function Remove-FleetApp {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [switch]$Purge
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        Use-FleetAppMutex $App {
            $removed = New-Object System.Collections.ArrayList
            $kept = New-Object System.Collections.ArrayList
            foreach ($linkName in @('current', 'blue', 'green')) {
                $link = Join-Path $Root $linkName
                if ($null -ne (Get-FleetJunctionTarget $link)) {
                    [IO.Directory]::Delete($link, $false)  # the link only, never its target's files
                    $null = $removed.Add($link)
                }
            }
            foreach ($part in @('releases', 'shared')) {
                $path = Join-Path $Root $part
                if (-not [IO.Directory]::Exists($path)) { continue }
                if (-not $Purge) { $null = $kept.Add($path); continue }
                # Rename first, as Remove-FleetRelease does: if anything inside is in use, nothing is deleted.
                $trash = Join-Path $Root ('.' + $part + '.removing.' + [guid]::NewGuid().ToString('N'))
                try { [IO.Directory]::Move($path, $trash) } catch {
                    Throw-FleetError 'FILE_IN_USE' "$path is in use and was not removed" @{ path = $path; removed = [object[]]$removed.ToArray() }
                }
                [IO.Directory]::Delete($trash, $true)
                $null = $removed.Add($path)
            }
            if ($Purge) {
                if ([IO.Directory]::Exists($Root) -and @([IO.Directory]::GetFileSystemEntries($Root)).Count -eq 0) {
                    [IO.Directory]::Delete($Root, $false)
                    $null = $removed.Add($Root)
                }
                $appDirectory = Get-FleetAppDirectory $App
                if ([IO.Directory]::Exists($appDirectory)) {
                    [IO.Directory]::Delete($appDirectory, $true)  # the node state: releases kept, history, lock
                    $null = $removed.Add($appDirectory)
                }
            } else {
                $state = Read-FleetAppState $App
                if ($null -ne $state.current -or $state.colours.Count -gt 0) {
                    if ($null -ne $state.current) {
                        $state.previous = $state.current
                        $state.current = $null
                    }
                    $state.colours = @{}  # their junctions are gone
                    $state.live = $null
                    Add-FleetHistory $state 'retire' $state.previous
                    Write-FleetAppState $App $state
                }
            }
            return @{ removed = [object[]]$removed.ToArray(); kept = [object[]]$kept.ToArray() }
        }
    }
}

function Get-FleetLog {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [int]$Tail,
        [string]$Path
    )
    # Read here: inside the operation body $PSBoundParameters would be the script block's own (empty) set.
    if (-not $PSBoundParameters.ContainsKey('Tail')) { $Tail = 100 }
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        if ($Tail -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'Tail must be 0 or more' @{ parameter = 'Tail' } }
        $file = Resolve-FleetLogFile $Root $Path
        # The service keeps its log open for writing: share read/write/delete, and read only the last 4 MiB.
        $stream = Open-FleetLogStream $file
        try {
            if ($stream.Length -gt 4194304) { $null = $stream.Seek(-4194304, [IO.SeekOrigin]::End) }
            $reader = New-Object System.IO.StreamReader -ArgumentList $stream, ([Text.Encoding]::UTF8)
            $lines = New-Object System.Collections.Generic.Queue[string]
            while ($Tail -gt 0 -and $null -ne ($line = $reader.ReadLine())) {
                $lines.Enqueue($line)
                if ($lines.Count -gt $Tail) { $null = $lines.Dequeue() }
            }
        } finally { $stream.Dispose() }
        return @{ path = $file; lines = [object[]]$lines.ToArray() }
    }
}

# ---------------------------------------------------------------------------------------------------------------
# Reading back what is deployed (deploy --dry-run --diff).

$script:FleetArgvSource = @'
using System;
using System.ComponentModel;
using System.Runtime.InteropServices;
namespace FleetNode {
    public static class CommandLine {
        [DllImport("shell32.dll", SetLastError = true, CharSet = CharSet.Unicode)]
        static extern IntPtr CommandLineToArgvW(string line, out int count);
        [DllImport("kernel32.dll")]
        static extern IntPtr LocalFree(IntPtr memory);
        public static string[] Split(string line) {
            int count;
            IntPtr argv = CommandLineToArgvW(line, out count);
            if (argv == IntPtr.Zero) { throw new Win32Exception(); }
            try {
                string[] args = new string[count];
                for (int i = 0; i < count; i++) { args[i] = Marshal.PtrToStringUni(Marshal.ReadIntPtr(argv, i * IntPtr.Size)); }
                return args;
            } finally { LocalFree(argv); }
        }
    }
}
'@

function Split-FleetCommandLine {
    # Windows' own parser (CommandLineToArgvW, what Go and the C runtime read), so the arguments read back are the
    # ones the service gets. With -Arguments the line has no program name (NSSM's AppParameters). The arguments
    # are written to the pipeline one by one: callers collect them with @().
    param([string]$Line, [switch]$Arguments)
    if ([string]::IsNullOrEmpty($Line)) { return }
    if (-not ('FleetNode.CommandLine' -as [type])) { Add-Type -TypeDefinition $script:FleetArgvSource }
    # A dummy program name first: CommandLineToArgvW reads the first token by the program-name rules.
    if ($Arguments) { return ([FleetNode.CommandLine]::Split('x ' + $Line) | Select-Object -Skip 1) }
    return [FleetNode.CommandLine]::Split($Line)
}

function Get-FleetServiceDefinition {
    # What Set-FleetService wrote, read back from the SCM, the service's registry key and NSSM's parameters, in
    # the protocol's terms; $null when there is no such service.
    param([string]$Name)
    $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $service) { return $null }
    $cim = Get-FleetServiceCim $Name
    $registry = Get-ItemProperty -LiteralPath (Get-FleetServiceKey $Name)
    $names = @($registry.PSObject.Properties.Name)
    $image = [string]$cim.PathName
    $startType = @{ 'Auto' = 'auto'; 'Manual' = 'manual'; 'Disabled' = 'disabled' }[[string]$cim.StartMode]
    if ($startType -eq 'auto' -and ($names -contains 'DelayedAutostart') -and $registry.DelayedAutostart -eq 1) { $startType = 'delayed-auto' }
    $dependencies = @()
    if ($names -contains 'DependOnService') { $dependencies = @($registry.DependOnService) }
    # Recovery as Set-FleetService kept it beside the service ("restart/5000/restart/5000|86400").
    $recovery = @('', '')
    if ($names -contains 'FleetRecovery') { $recovery = ([string]$registry.FleetRecovery).Split('|') }
    $tokens = @($recovery[0].Split('/') | Where-Object { $_ -ne '' })
    $actions = New-Object System.Collections.ArrayList
    for ($i = 0; $i + 1 -lt $tokens.Count; $i += 2) { $null = $actions.Add($tokens[$i] + '/' + $tokens[$i + 1]) }
    $reset = $null
    if ($recovery.Count -gt 1 -and $recovery[1] -match '^[0-9]+$') { $reset = [int]$recovery[1] }
    $stop = $null
    if ($names -contains 'FleetStopTimeoutSeconds') { $stop = [int]$registry.FleetStopTimeoutSeconds }
    $definition = @{
        image_path = $image; display_name = [string]$cim.DisplayName; description = [string]$cim.Description
        account = [string]$cim.StartName; start_type = $startType; dependencies = [object[]]$dependencies
        recovery_actions = [object[]]$actions.ToArray(); recovery_reset_seconds = $reset; stop_timeout_seconds = $stop
        hosting = 'native'; working_directory = $null; stdout_path = $null; stderr_path = $null; rotate_bytes = $null
        restart_delay_milliseconds = $null; throttle_milliseconds = $null
    }
    $pairs = @()
    if ($image -like '*\nssm.exe"' -or $image -like '*\nssm.exe') {
        $definition.hosting = 'nssm'
        $definition.binary_path = Get-FleetNssmValue $Name 'Application'
        $definition.arguments = [object[]]@(Split-FleetCommandLine (Get-FleetNssmValue $Name 'AppParameters') -Arguments)
        $pairs = @((Get-FleetNssmValue $Name 'AppEnvironmentExtra').Split("`n") | Where-Object { $_ -ne '' })
        $definition.working_directory = Get-FleetNssmValue $Name 'AppDirectory'
        $definition.stdout_path = Get-FleetNssmValue $Name 'AppStdout'
        $definition.stderr_path = Get-FleetNssmValue $Name 'AppStderr'
        foreach ($row in @(@('rotate_bytes', 'AppRotateBytes'), @('restart_delay_milliseconds', 'AppRestartDelay'), @('throttle_milliseconds', 'AppThrottle'))) {
            $value = Get-FleetNssmValue $Name $row[1]
            if ($value -match '^[0-9]+$') { $definition[$row[0]] = [long]$value }
        }
    } else {
        $argv = @(Split-FleetCommandLine $image)
        $definition.binary_path = $null
        if ($argv.Count -gt 0) { $definition.binary_path = $argv[0] }
        $definition.arguments = [object[]]@($argv | Select-Object -Skip 1)
        if ($names -contains 'Environment') { $pairs = @($registry.Environment) }
    }
    $environment = @{}
    $hashes = New-Object System.Collections.ArrayList
    $sha = [Security.Cryptography.SHA256]::Create()
    foreach ($pair in $pairs) {
        $at = ([string]$pair).IndexOf('=')
        if ($at -le 0) { continue }
        $value = ([string]$pair).Substring($at + 1)
        $environment[([string]$pair).Substring(0, $at)] = $value
        # The hash lets the controller tell a changed secret from an unchanged one without reading it.
        $digest = [BitConverter]::ToString($sha.ComputeHash([Text.Encoding]::UTF8.GetBytes($value))).Replace('-', '').ToLowerInvariant()
        $null = $hashes.Add(@{ name = ([string]$pair).Substring(0, $at); sha256 = $digest })
    }
    $sha.Dispose()
    $definition.environment = $environment
    $definition.environment_sha256 = [object[]]$hashes.ToArray()
    return $definition
}

function Get-FleetReleaseFileList {
    # Every file of a release directory but its exe: relative path, size, sha256, and the text when it is small
    # and valid UTF-8 (what Install-FleetRelease writes for rendered files).
    param([string]$Directory, [string]$ExeName)
    if (-not [IO.Directory]::Exists($Directory)) { return }
    $prefix = $Directory.TrimEnd('\').Length + 1
    $strict = New-Object System.Text.UTF8Encoding -ArgumentList $false, $true
    foreach ($file in @(Get-ChildItem -LiteralPath $Directory -File -Recurse -Force | Sort-Object FullName)) {
        $relative = $file.FullName.Substring($prefix)
        if ($relative -ieq $ExeName) { continue }
        $text = $null
        if ($file.Length -le 262144) {
            try { $text = $strict.GetString([IO.File]::ReadAllBytes($file.FullName)) } catch { $text = $null }
        }
        $hash = (Get-FileHash -LiteralPath $file.FullName -Algorithm SHA256).Hash.ToLowerInvariant()
        @{ path = $relative; size = [long]$file.Length; sha256 = $hash; text = $text }
    }
}

function Get-FleetDeployed {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [string]$ServiceName,
        [string]$Release
    )
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        if ([string]::IsNullOrEmpty($ServiceName)) { $ServiceName = $App }
        Assert-FleetName $ServiceName 'ServiceName'
        $state = Read-FleetAppState $App
        if ([string]::IsNullOrEmpty($Release)) { $Release = $state.current }
        $files = @()
        if ([string]::IsNullOrEmpty($Release)) {
            $Release = $null
        } else {
            Assert-FleetName $Release 'Release' -AllowPlus
            $entry = Find-FleetRelease $state $Release
            if ($null -eq $entry) { Throw-FleetError 'NOT_FOUND' "release $Release is not installed" @{ release = $Release } }
            $files = @(Get-FleetReleaseFileList (Join-Path (Join-Path $Root 'releases') $Release) ([string]$entry.exe_name))
        }
        return @{ release = $Release; files = [object[]]$files; service = (Get-FleetServiceDefinition $ServiceName) }
    }
}

Export-ModuleMember -Function @(
    'Get-FleetFacts', 'Lock-FleetApp', 'Update-FleetAppLock', 'Unlock-FleetApp', 'Test-FleetArtifact', 'Receive-FleetArtifact',
    'Save-FleetArtifactFromUrl', 'Install-FleetRelease', 'Set-FleetService', 'Stop-FleetService',
    'Start-FleetService', 'Switch-FleetRelease', 'Set-FleetReleaseVerdict',
    'Get-FleetState', 'Test-FleetHealth', 'Remove-FleetRelease',
    'Set-FleetFirewallRule', 'Set-FleetScheduledTask', 'Set-FleetPortProxy', 'Switch-FleetColour', 'Get-FleetEvents', 'Remove-FleetService',
    'Remove-FleetApp', 'Get-FleetLog', 'Get-FleetDeployed'
)

# ---------------------------------------------------------------------------------------------------------------
# The day-one commands: a log read cursor for `fleetctl logs -f`, and `fleetctl exec`'s own script.

function Resolve-FleetLogFile {
    # Internal: the log file an operation reads: Path relative to Root (default shared\logs); a directory means its
    # most recently written file (at any depth, dot-files excluded).
    param([string]$Root, [string]$Path)
    $file = Join-Path (Join-Path $Root 'shared') 'logs'
    if (-not [string]::IsNullOrEmpty($Path)) {
        Assert-FleetRelativePath $Path 'Path'
        $file = Join-Path $Root $Path
    }
    if ([IO.Directory]::Exists($file)) {
        $newest = Get-ChildItem -LiteralPath $file -File -Recurse | Where-Object { -not $_.Name.StartsWith('.') } |
            Sort-Object LastWriteTimeUtc -Descending | Select-Object -First 1
        if ($null -eq $newest) { Throw-FleetError 'NOT_FOUND' "no log file under $file" @{ path = $file } }
        $file = $newest.FullName
    }
    if (-not [IO.File]::Exists($file)) { Throw-FleetError 'NOT_FOUND' "log file $file does not exist" @{ path = $file } }
    return $file
}

function Open-FleetLogStream {
    # Internal: the service keeps its log open for writing, so share read, write and delete.
    param([string]$File)
    $share = [IO.FileShare]::ReadWrite -bor [IO.FileShare]::Delete
    return New-Object System.IO.FileStream -ArgumentList $File, ([IO.FileMode]::Open), ([IO.FileAccess]::Read), $share
}

function Read-FleetLog {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$App,
        [Parameter(Mandatory = $true)][string]$Root,
        [string]$Path,
        [string]$File,
        [long]$Offset,
        [int]$Tail
    )
    # Read here: inside the operation body $PSBoundParameters would be the script block's own (empty) set.
    $following = $PSBoundParameters.ContainsKey('Offset')
    if (-not $PSBoundParameters.ContainsKey('Tail')) { $Tail = 100 }
    Invoke-FleetOperation {
        Assert-FleetName $App 'App'
        Assert-FleetRoot $Root
        if ($Tail -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'Tail must be 0 or more' @{ parameter = 'Tail' } }
        if ($following -and $Offset -lt 0) { Throw-FleetError 'INVALID_ARGUMENT' 'Offset must be 0 or more' @{ parameter = 'Offset' } }
        $target = Resolve-FleetLogFile $Root $Path
        $stream = Open-FleetLogStream $target
        try {
            $size = [long]$stream.Length
            $reset = $false
            $cap = 1048576
            if ($following) {
                $start = $Offset
                # Another file there now (rotated), or this one shrank (truncated): the cursor means nothing here.
                if ((-not [string]::IsNullOrEmpty($File) -and $File -ne $target) -or $Offset -gt $size) { $start = [long]0; $reset = $true }
            } else {
                $cap = 4194304
                $start = [Math]::Max([long]0, $size - $cap)
            }
            $count = [int][Math]::Min([long]$cap, $size - $start)
            $buffer = New-Object byte[] $count
            $null = $stream.Seek($start, [IO.SeekOrigin]::Begin)
            $filled = 0
            while ($filled -lt $count -and ($read = $stream.Read($buffer, $filled, $count - $filled)) -gt 0) { $filled += $read }
        } finally { $stream.Dispose() }
        # Complete lines only: a line the service is still writing is returned by the next call, whole.
        $take = 0
        if ($filled -gt 0) { $take = [Array]::LastIndexOf($buffer, [byte]10, $filled - 1) + 1 }
        if ($take -eq 0 -and $filled -ge $cap) { $take = $filled }  # one line longer than an answer: cut it
        $lines = New-Object System.Collections.ArrayList
        if ($take -gt 0) {
            $parts = [Text.Encoding]::UTF8.GetString($buffer, 0, $take).Split([char]10)
            $last = $parts.Length - 1
            if ($parts[$last] -eq '') { $last -= 1 }
            $first = 0
            if (-not $following -and $start -gt 0) { $first = 1 }  # the 4 MiB window began inside a line
            for ($i = $first; $i -le $last; $i++) { $null = $lines.Add($parts[$i].TrimEnd([char]13)) }
        }
        if (-not $following) {
            if ($Tail -eq 0) { $lines.Clear() }
            elseif ($lines.Count -gt $Tail) { $lines.RemoveRange(0, $lines.Count - $Tail) }
        }
        $next = $start + $take
        return @{ path = $target; lines = [object[]]$lines.ToArray(); offset = $next; size = $size; reset = $reset
                  more = ($start + $filled -lt $size) }
    }
}

function Invoke-FleetCommand {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Script
    )
    Invoke-FleetOperation {
        if ([string]::IsNullOrWhiteSpace($Script)) { Throw-FleetError 'INVALID_ARGUMENT' 'Script is empty' @{ parameter = 'Script' } }
        # Parsed before anything runs: a script with a syntax error runs no part of itself.
        $tokens = $null
        $parseErrors = $null
        $null = [Management.Automation.Language.Parser]::ParseInput($Script, [ref]$tokens, [ref]$parseErrors)
        if (@($parseErrors).Count -gt 0) {
            $first = @($parseErrors)[0]
            Throw-FleetError 'INVALID_ARGUMENT' ("Script does not parse: " + $first.Message + " (line " + $first.Extent.StartLineNumber + ")") @{ parameter = 'Script' }
        }
        # The operator's own script, by design (docs/windows.md): it arrives as this one parameter and is run as
        # written, never combined with any other value. It runs as an ordinary script would, not under this
        # module's strict mode and stop-on-error preference, and its errors are collected, not raised, so the
        # output before a failing command is still returned.
        $block = [ScriptBlock]::Create($Script)
        Set-StrictMode -Off
        $ErrorActionPreference = 'Continue'
        $clock = [Diagnostics.Stopwatch]::StartNew()
        $output = New-Object System.Collections.ArrayList
        $errorCount = 0
        $global:LASTEXITCODE = 0
        try {
            & $block 2>&1 | ForEach-Object {
                if ($_ -is [Management.Automation.ErrorRecord]) {
                    $errorCount += 1
                    $null = $output.Add('ERROR: ' + $_.ToString())
                } else {
                    foreach ($line in @($_ | Out-String -Stream -Width 4096)) { $null = $output.Add([string]$line) }
                }
            }
        } catch {
            $errorCount += 1
            $null = $output.Add('ERROR: ' + $_.Exception.Message)
        }
        $exitCode = 0
        if ($global:LASTEXITCODE -is [int] -and $global:LASTEXITCODE -ne 0) { $exitCode = [int]$global:LASTEXITCODE }
        elseif ($errorCount -gt 0) { $exitCode = 1 }
        return @{ output = [object[]]$output.ToArray(); errors = $errorCount; exit_code = $exitCode; elapsed_ms = [int]$clock.ElapsedMilliseconds }
    }
}

Export-ModuleMember -Function @('Read-FleetLog', 'Invoke-FleetCommand')
