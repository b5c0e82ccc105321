#!/bin/sh
# Answers `kafka-topics --bootstrap-server HOST:PORT --list` like the real tool, with a fixed list.
for arg in "$@"; do
  if [ "$arg" = "--list" ]; then
    printf '%s\n' __consumer_offsets pix-events pix-transactions transaction-events fraud-alerts
    exit 0
  fi
done
echo "kafka-topics stand-in: only --list is supported" >&2
exit 1
