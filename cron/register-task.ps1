# Registers cron\reconcile-task.xml in Windows Task Scheduler for the current
# user, for one mapping of %APPDATA%\reconcile\config.toml.
#   powershell -ExecutionPolicy Bypass -File register-task.ps1 -Mapping photos -At 03:15
param(
    [Parameter(Mandatory = $true)][string]$Mapping,
    [string]$At = "03:15",
    [string]$Reconcile = ""
)
$ErrorActionPreference = "Stop"

if (-not $Reconcile) {
    # the task runs without your shell's PATH: record the full path now
    $Reconcile = (Get-Command reconcile.exe).Source
}
$hour, $minute = $At.Split(":")
$xmlPath = Join-Path $PSScriptRoot "reconcile-task.xml"
[xml]$task = Get-Content -Raw -Encoding UTF8 $xmlPath
$ns = New-Object System.Xml.XmlNamespaceManager($task.NameTable)
$ns.AddNamespace("t", "http://schemas.microsoft.com/windows/2004/02/mit/task")

$log = Join-Path $env:LOCALAPPDATA "reconcile\$Mapping.log"
$task.SelectSingleNode("//t:Exec/t:Command", $ns).InnerText = $Reconcile
$task.SelectSingleNode("//t:Exec/t:Arguments", $ns).InnerText = "apply -q $Mapping --log-file `"$log`""
$task.SelectSingleNode("//t:CalendarTrigger/t:StartBoundary", $ns).InnerText = `
    (Get-Date -Hour $hour -Minute $minute -Second 0).ToString("yyyy-MM-ddTHH:mm:ss")
$task.SelectSingleNode("//t:RegistrationInfo/t:Description", $ns).InnerText = "reconcile: mirror the mapping $Mapping"
$task.SelectSingleNode("//t:RegistrationInfo/t:URI", $ns).InnerText = "\reconcile $Mapping"

Register-ScheduledTask -TaskName "reconcile $Mapping" -Xml $task.OuterXml -Force | Out-Null
Write-Host "registered task 'reconcile $Mapping' running $Reconcile daily at $At; log: $log"
Write-Host "run it now with: Start-ScheduledTask -TaskName 'reconcile $Mapping'"
