<#
.SYNOPSIS
Start the FaaS platform on Windows (PowerShell 5.1 or 7).

.DESCRIPTION
  .\bin\run.windows.ps1 [local]           the local stack on http://localhost:8080 (default; Ctrl-C stops it)
  .\bin\run.windows.ps1 compose           the production topology with Docker Compose, on http://localhost
  .\bin\run.windows.ps1 swarm             the same as a swarm stack (makes a one-node swarm if needed)
  .\bin\run.windows.ps1 down [-Volumes]   stop the compose project or the stack (-Volumes: delete data)

The same modes as bin/run.sh. Local stack: FAAS_PORT (8080), FAAS_HOST (127.0.0.1),
FAAS_NATS_PORT (4222), FAAS_DATA_DIR (.data), LOG_LEVEL (INFO). compose and swarm need Docker
Desktop (or another engine with the Compose v2 plugin): FAAS_HTTP_PORT (80), FAAS_SECRETS_DIR
(.secrets), FAAS_PROJECT (faas), FAAS_IMAGE_TAG (latest), FAAS_WAIT_SECONDS (300),
FAAS_SWARM_ADVERTISE_ADDR, DOCKER_GID.

Services: auth-service (port 8081), registry-service (8082), publisher-service (8083),
spawner-service, apisix, nats-1..3, postgres. Scale one by that name (first export the
variables README.md's "Scale" lists, DOCKER_GID above all):
  docker compose -p faas up -d --scale spawner-service=20   |   docker service scale faas_spawner-service=20
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0)]
    [ValidateSet('local', 'compose', 'swarm', 'down', 'help')]
    [string]$Mode = 'local',
    [switch]$Volumes
)

# Stop on PowerShell errors. Functions that read a native command's stderr set 'Continue' for
# themselves: Windows PowerShell turns redirected stderr lines into errors.
$ErrorActionPreference = 'Stop'
Set-Location (Split-Path -Parent $PSScriptRoot)

function Get-Setting([string]$Name, [string]$Default) {
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ([string]::IsNullOrEmpty($value)) { return $Default }
    return $value
}

$Project = Get-Setting 'FAAS_PROJECT' 'faas'
$HttpPort = Get-Setting 'FAAS_HTTP_PORT' '80'
$ImageTag = Get-Setting 'FAAS_IMAGE_TAG' 'latest'
$SecretsDir = Get-Setting 'FAAS_SECRETS_DIR' '.secrets'
$WaitSeconds = [int](Get-Setting 'FAAS_WAIT_SECONDS' '300')
$ComposeFile = 'docker-compose.yml'
# The images docker-compose.yml runs, built from this repository (as in bin/run.sh).
$Images = @(
    @{ Image = 'faas-platform/auth-service'; Dockerfile = 'auth-service/Dockerfile'; Context = '.' },
    @{ Image = 'faas-platform/registry-service'; Dockerfile = 'registry-service/Dockerfile'; Context = '.' },
    @{ Image = 'faas-platform/publisher-service'; Dockerfile = 'publisher-service/Dockerfile'; Context = '.' },
    @{ Image = 'faas-platform/spawner-service'; Dockerfile = 'spawner-service/Dockerfile'; Context = '.' },
    @{ Image = 'faas-platform/api-gateway'; Dockerfile = 'api-gateway/Dockerfile'; Context = 'api-gateway' }
)

function Say([string]$Message) { Write-Host "==> $Message" }

function Fail([string]$Message) {
    Write-Host "error: $Message" -ForegroundColor Red
    exit 1
}

# Invoke-Native COMMAND ARGS...: runs a native command and stops the script when it fails.
# (Plain functions with $args, so that arguments such as --detach pass through untouched.)
function Invoke-Native {
    $command, $arguments = $args
    & $command @arguments
    if ($LASTEXITCODE -ne 0) { Fail "$command $($arguments -join ' ') failed (exit $LASTEXITCODE)" }
}

# Test-Native COMMAND ARGS...: whether a native command succeeds (its output is discarded).
function Test-Native {
    $ErrorActionPreference = 'Continue'
    $command, $arguments = $args
    try { & $command @arguments *> $null; return ($LASTEXITCODE -eq 0) } catch { return $false }
}

# --- local ------------------------------------------------------------------------------------

function Start-Local {
    if (-not (Get-Command uv -ErrorAction SilentlyContinue)) {
        Say 'installing uv (the Python package manager) from PyPI'
        $python = Get-Command python -ErrorAction SilentlyContinue
        if (-not $python) { $python = Get-Command py -ErrorAction SilentlyContinue }
        if (-not $python) { Fail 'uv is missing and there is no Python to install it with (https://docs.astral.sh/uv/)' }
        Invoke-Native $python.Source -m pip install --user --quiet uv
        $scripts = & $python.Source -c "import sysconfig; print(sysconfig.get_path('scripts', 'nt_user'))"
        $env:Path = "$scripts;$env:Path"
        if (-not (Get-Command uv -ErrorAction SilentlyContinue)) { Fail "uv installed but not on PATH ($scripts)" }
    }
    Invoke-Native uv sync --frozen --quiet
    $venv = Get-Setting 'UV_PROJECT_ENVIRONMENT' '.venv'
    & (Join-Path $venv 'Scripts\python.exe') 'bin/localstack.py'
    exit $LASTEXITCODE
}

# --- compose / swarm / down -------------------------------------------------------------------

function Assert-Docker {
    if (-not (Get-Command docker -ErrorAction SilentlyContinue)) { Fail 'the docker CLI is not installed (Docker Desktop: https://docs.docker.com/desktop/)' }
    if (-not (Test-Native docker info)) { Fail 'no Docker engine answers `docker info`: start Docker Desktop first' }
}

function Assert-Compose {
    if (-not (Test-Native docker compose version)) { Fail 'Docker Compose v2 is missing (it comes with Docker Desktop)' }
}

function Invoke-Compose {
    Invoke-Native docker compose --project-name $Project --file $ComposeFile @args
}

function Test-StackRunning {
    $ErrorActionPreference = 'Continue'
    if ((docker info --format '{{.Swarm.LocalNodeState}}' 2>$null) -ne 'active') { return $false }
    return [bool]((docker stack ls --format '{{.Name}}' 2>$null) -contains $Project)
}

function Test-ComposeRunning {
    $ErrorActionPreference = 'Continue'
    return [bool](docker ps --quiet --filter "label=com.docker.compose.project=$Project" 2>$null)
}

function Write-SecretFile([string]$Path, [string]$Text) {
    # LF line endings, UTF-8 without a byte order mark: the containers read these files.
    [System.IO.File]::WriteAllText($Path, $Text.Replace("`r`n", "`n"))
}

# Generates the secrets once (existing files are never overwritten): the database password and
# the token key pair. The key pair comes from .NET when it can write PEM (PowerShell 7.3+),
# otherwise from the auth-service image just built (its Python has the cryptography package).
function Initialize-Secrets {
    New-Item -ItemType Directory -Force -Path $SecretsDir | Out-Null
    # Absolute paths: .NET file calls do not follow PowerShell's current location.
    $dir = (Resolve-Path $SecretsDir).Path
    $passwordFile = Join-Path $dir 'db_password'
    $privateKeyFile = Join-Path $dir 'jwt_private_key.pem'
    $publicKeyFile = Join-Path $dir 'jwt_public_key.pem'
    $created = @()

    if (-not (Test-Path $passwordFile)) {
        $bytes = New-Object byte[] 32
        [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
        Write-SecretFile $passwordFile (($bytes | ForEach-Object { $_.ToString('x2') }) -join '')
        $created += 'db_password'
    }
    if ((Test-Path $publicKeyFile) -and -not (Test-Path $privateKeyFile)) {
        Fail ("{0} exists without {1}: restore the private key, or remove the public key to make a new pair" -f $publicKeyFile, $privateKeyFile)
    }
    if (-not (Test-Path $privateKeyFile)) {
        $rsa = [System.Security.Cryptography.RSA]::Create(2048)
        if ($rsa.PSObject.Methods.Name -contains 'ExportPkcs8PrivateKeyPem') {
            Write-SecretFile $privateKeyFile ($rsa.ExportPkcs8PrivateKeyPem() + "`n")
            Write-SecretFile $publicKeyFile ($rsa.ExportSubjectPublicKeyInfoPem() + "`n")
        } else {
            # One line, no double quotes: Windows PowerShell passes neither well to native commands.
            $script = @(
                'from cryptography.hazmat.primitives import serialization as s',
                'from cryptography.hazmat.primitives.asymmetric import rsa',
                'k = rsa.generate_private_key(public_exponent=65537, key_size=2048)',
                "open('/out/jwt_private_key.pem', 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))",
                "open('/out/jwt_public_key.pem', 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))"
            ) -join '; '
            Invoke-Native docker run --rm --user 0 --entrypoint python --volume "${dir}:/out" "faas-platform/auth-service:$ImageTag" -c $script
        }
        $created += 'jwt_private_key.pem', 'jwt_public_key.pem'
    }
    if ($created.Count -gt 0) { Say "generated secrets in ${SecretsDir}: $($created -join ' ')" }
    else { Say "using the existing secrets in $SecretsDir" }
}

function Build-Images {
    foreach ($entry in $Images) {
        Say "building $($entry.Image):$ImageTag"
        Invoke-Native docker build --tag "$($entry.Image):$ImageTag" --file $entry.Dockerfile $entry.Context
    }
}

function Set-DeployEnvironment {
    $ErrorActionPreference = 'Continue'
    # Read by docker-compose.yml when docker compose / docker stack interpolate it.
    $env:FAAS_SECRETS_DIR = (Resolve-Path $SecretsDir).Path
    $env:FAAS_HTTP_PORT = $HttpPort
    $env:FAAS_IMAGE_TAG = $ImageTag
    if (-not $env:DOCKER_GID) {
        # The Docker socket's group as the containers see it (it lives in Docker Desktop's VM).
        $gid = docker run --rm --entrypoint python --volume /var/run/docker.sock:/var/run/docker.sock `
            "faas-platform/spawner-service:$ImageTag" -c "import os; print(os.stat('/var/run/docker.sock').st_gid)" 2>$null
        $env:DOCKER_GID = if ("$gid" -match '^\d+$') { "$gid" } else { '0' }
    }
}

function Get-Status([string]$Path) {
    try {
        $reply = Invoke-WebRequest -Uri "http://localhost:$HttpPort$Path" -UseBasicParsing -TimeoutSec 5
        return [int]$reply.StatusCode
    } catch {
        return 0
    }
}

function Wait-Gateway {
    Say "waiting for the platform behind http://localhost:$HttpPort (up to $WaitSeconds s)"
    $deadline = (Get-Date).AddSeconds($WaitSeconds)
    while ($true) {
        $pending = @('/auth/ready', '/registry/ready', '/publisher/ready') | Where-Object { (Get-Status $_) -ne 200 }
        if (-not $pending) { return $true }
        if ((Get-Date) -ge $deadline) {
            Write-Host "error: not ready after $WaitSeconds s: $($pending -join ' ') (through the gateway)" -ForegroundColor Red
            return $false
        }
        Start-Sleep -Seconds 2
    }
}

function Write-Url {
    $url = if ($HttpPort -eq '80') { 'http://localhost' } else { "http://localhost:$HttpPort" }
    Say "the platform is up: $url"
    Write-Output $url
}

function Start-Compose {
    Assert-Docker
    Assert-Compose
    if (Test-StackRunning) { Fail "the swarm stack '$Project' is running: .\bin\run.windows.ps1 down first" }
    Build-Images
    Initialize-Secrets
    Set-DeployEnvironment
    Say "starting the compose project '$Project'"
    Invoke-Compose up --detach --no-build --remove-orphans
    if (-not (Wait-Gateway)) { Fail "see: docker compose -p $Project ps   and   docker compose -p $Project logs [SERVICE, e.g. auth-service]" }
    Write-Url
}

function Start-Swarm {
    $ErrorActionPreference = 'Continue'
    Assert-Docker
    if (Test-ComposeRunning) { Fail "the compose project '$Project' is running: .\bin\run.windows.ps1 down first" }
    $state = docker info --format '{{.Swarm.LocalNodeState}}'
    if ($state -eq 'inactive') {
        Say 'initialising a one-node swarm (docker swarm init)'
        $init = @('swarm', 'init')
        if ($env:FAAS_SWARM_ADVERTISE_ADDR) { $init += '--advertise-addr', $env:FAAS_SWARM_ADVERTISE_ADDR }
        Invoke-Native docker @init
    } elseif ($state -ne 'active') {
        Fail "the swarm state of this node is '$state'"
    } elseif ((docker info --format '{{.Swarm.ControlAvailable}}') -ne 'true') {
        Fail 'this node is a swarm worker: run the swarm mode on a manager'
    }
    Build-Images
    Initialize-Secrets
    Set-DeployEnvironment
    Say "deploying the stack '$Project'"
    # The images were just built on this node: do not ask a registry for their digests.
    Invoke-Native docker stack deploy --resolve-image never --compose-file $ComposeFile $Project
    if (-not (Wait-Gateway)) { Fail "see: docker stack ps $Project   and   docker service logs ${Project}_<service> (e.g. ${Project}_auth-service)" }
    Write-Url
}

function Stop-Platform {
    $ErrorActionPreference = 'Continue'
    Assert-Docker
    $stopped = $false
    if (Test-ComposeRunning) {
        Assert-Compose
        Say "stopping the compose project '$Project'"
        if ($Volumes) { Invoke-Compose down --volumes --remove-orphans } else { Invoke-Compose down --remove-orphans }
        $stopped = $true
    }
    if (Test-StackRunning) {
        Say "removing the stack '$Project'"
        Invoke-Native docker stack rm $Project
        if ($Volumes) {
            $deadline = (Get-Date).AddSeconds(300)
            while (docker ps --all --quiet --filter "label=com.docker.stack.namespace=$Project") {
                if ((Get-Date) -ge $deadline) { Fail "the stack's containers did not stop within 300 s; remove its volumes later" }
                Start-Sleep -Seconds 2
            }
            foreach ($volume in (docker volume ls --quiet --filter "label=com.docker.stack.namespace=$Project")) {
                Invoke-Native docker volume rm $volume
            }
        }
        $stopped = $true
    }
    if ($stopped) { Say "stopped; the secrets stay in $SecretsDir" }
    else { Say "nothing to stop: no compose project or stack named '$Project' is running" }
}

if ($Volumes -and $Mode -ne 'down') { Fail '-Volumes applies to the down mode only' }
switch ($Mode) {
    'local' { Start-Local }
    'compose' { Start-Compose }
    'swarm' { Start-Swarm }
    'down' { Stop-Platform }
    'help' { Get-Help $PSCommandPath -Detailed }
}
