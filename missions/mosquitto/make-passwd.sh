#!/usr/bin/env bash
# Create/extend a Mosquitto password file for droneops accounts.
# Usage: make-passwd.sh PASSWD_FILE USER [USER...]
# Prompts for each password (or reads DRONEOPS_PW_<USER> from the environment, with '-' in the
# user name written as '_', e.g. DRONEOPS_PW_station_S01). Uses mosquitto_passwd (hashed, salted).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 PASSWD_FILE USER [USER...]" >&2
    exit 2
fi
file=$1; shift
command -v mosquitto_passwd >/dev/null || { echo "mosquitto_passwd not found (apt-get install mosquitto)" >&2; exit 1; }
touch "$file"
chmod 600 "$file"
for user in "$@"; do
    var="DRONEOPS_PW_${user//-/_}"
    pw=${!var:-}
    if [ -z "$pw" ]; then
        read -r -s -p "password for $user: " pw; echo >&2
    fi
    mosquitto_passwd -b "$file" "$user" "$pw"
    echo "added $user to $file" >&2
done
