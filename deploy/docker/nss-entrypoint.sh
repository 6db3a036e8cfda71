#!/bin/sh
# Run a command with a passwd entry for the current UID.
#
# Spark's Hadoop client asks the OS for the user name and fails with
# "invalid null input: name" when the UID has none, which is the case under
# OpenShift's arbitrary UIDs. nss_wrapper supplies the entry without making
# /etc/passwd writable.
set -eu
if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
  NSS_WRAPPER_PASSWD="${TMPDIR:-/tmp}/streamml-passwd"
  cat /etc/passwd > "$NSS_WRAPPER_PASSWD"
  echo "streamml:x:$(id -u):$(id -g):streamml:${HOME:-/tmp}:/usr/sbin/nologin" >> "$NSS_WRAPPER_PASSWD"
  NSS_WRAPPER_GROUP=/etc/group
  LD_PRELOAD=libnss_wrapper.so
  export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD
fi
exec "$@"
