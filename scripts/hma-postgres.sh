#!/usr/bin/env bash
# PostgreSQL for Hasher-Matcher-Actioner on this machine (Debian or Ubuntu), run as root:
# installs Debian's postgresql (and libpq-dev, which building HMA's psycopg2 needs) when
# missing, starts its cluster, and creates the
# role and the database HMA uses (default: role "hma", password "hma", database "hma",
# the defaults of src/neuralhash/integrations/hma/omm_config.py). The role may create
# databases (the HMA tests make a fresh one per run). Safe to run again: what exists is kept.
#
#   HMA_DB_USER / HMA_DB_PASSWORD / HMA_DB_NAME   other names
set -euo pipefail
user=${HMA_DB_USER:-hma}
password=${HMA_DB_PASSWORD:-hma}
dbname=${HMA_DB_NAME:-hma}
for name in "$user" "$dbname"; do
    [[ $name =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "hma-postgres: '$name' is not a plain lower-case name" >&2; exit 2; }
done
[[ $password != *"'"* ]] || { echo "hma-postgres: the password may not contain a quote" >&2; exit 2; }
if [ "$(id -u)" != 0 ]; then
    echo "hma-postgres: run as root (sudo $0): it installs and starts PostgreSQL" >&2
    exit 1
fi
if ! command -v pg_lsclusters >/dev/null 2>&1 || ! command -v pg_config >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql libpq-dev >/dev/null
fi
# Debian's package creates one cluster ("VERSION main"); make one if it was removed.
read -r version cluster port _ < <(pg_lsclusters --no-header | head -n 1) || true
if [ -z "${version:-}" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >/dev/null
    read -r version cluster port _ < <(pg_lsclusters --no-header | head -n 1)
fi
if ! pg_ctlcluster "$version" "$cluster" status >/dev/null 2>&1; then
    pg_ctlcluster "$version" "$cluster" start
fi
psql_admin() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
for _ in $(seq 30); do psql_admin -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" != 1 ]; then
    psql_admin -c "CREATE ROLE $user LOGIN CREATEDB PASSWORD '$password'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$dbname'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $dbname OWNER $user"
fi
echo "PostgreSQL $version ($cluster) on port $port: postgresql+psycopg2://$user:$password@127.0.0.1:$port/$dbname"
