#!/bin/sh
# How the recorded streams in this directory were made: run inside a network namespace
# holding an Asterisk 22 whose AMI listens on 127.0.0.1:5038, with pjsip.conf endpoints
# itsp-a (inbound trunk, identified by X-Siporch-Trunk), siporch-edge-edge-central
# (contact 127.0.0.1:5070), phone-100 (127.0.0.1:5080, context dialling the edge) and a
# registration itsp-b -> 127.0.0.1:5095.  Usage: record_calls.sh SECRET OUTDIR [PREFIX]
set -eu
SECRET=$1
OUT=$2
P=${3:-}  # prefix of the stream files
HERE=$(dirname "$0")
SIPP="sipp -i 127.0.0.1 -nostdin -trace_err -error_file /dev/null"

# calls.json: 3 inbound calls on itsp-a and 2 outbound calls via the edge (carried by itsp-a)
python3 "$HERE/record.py" --secret "$SECRET" --seconds 16 --out "$OUT/${P}calls.json" &
REC=$!
sleep 1
timeout 20 $SIPP -p 5070 -mp 16000 -sf "$HERE/sipp/edge_uas.xml" -key trunk itsp-a >/dev/null 2>&1 &
EDGE=$!
sleep 0.5
timeout 15 $SIPP -p 5090 -mp 16100 -sf "$HERE/sipp/trunk_uac.xml" -key trunk itsp-a \
    -key caller +15551230001 -s +12025550100 -m 3 -r 3 -d 6000 127.0.0.1:5060 >/dev/null 2>&1 &
IN=$!
timeout 15 $SIPP -p 5080 -mp 16200 -sf "$HERE/sipp/trunk_uac.xml" -key trunk none \
    -key caller 100 -s +12025550123 -m 2 -r 2 -d 7000 127.0.0.1:5060 >/dev/null 2>&1 &
OUTB=$!
wait $IN || true
wait $OUTB || true
kill $EDGE 2>/dev/null || true
wait $REC

# live.json: the same calls, recorded while they are up (the Status answers list them)
python3 "$HERE/record.py" --secret "$SECRET" --seconds 5 --out "$OUT/${P}live.json" &
REC=$!
sleep 1
timeout 25 $SIPP -p 5070 -mp 16000 -sf "$HERE/sipp/edge_uas.xml" -key trunk itsp-a >/dev/null 2>&1 &
EDGE=$!
sleep 0.5
timeout 20 $SIPP -p 5090 -mp 16100 -sf "$HERE/sipp/trunk_uac.xml" -key trunk itsp-a \
    -key caller +15551230001 -s +12025550100 -m 3 -r 3 -d 12000 127.0.0.1:5060 >/dev/null 2>&1 &
IN=$!
timeout 20 $SIPP -p 5080 -mp 16200 -sf "$HERE/sipp/trunk_uac.xml" -key trunk none \
    -key caller 100 -s +12025550123 -m 2 -r 2 -d 12000 127.0.0.1:5060 >/dev/null 2>&1 &
OUTB=$!
wait $REC
wait $IN || true
wait $OUTB || true
kill $EDGE 2>/dev/null || true

# registration.json: registrar down (itsp-b rejected), registrar up (registered),
# registrar gone and the registration removed by hand (unregistered)
python3 "$HERE/record.py" --secret "$SECRET" --seconds 14 --out "$OUT/${P}registration.json" &
REC=$!
sleep 5
timeout 8 $SIPP -p 5095 -mp 16300 -sf "$HERE/sipp/registrar.xml" >/dev/null 2>&1 &
REG=$!
sleep 5
${ASTERISK_RX:-asterisk -rx} "pjsip send unregister itsp-b" >/dev/null 2>&1 || true
wait $REG || true
wait $REC
${ASTERISK_RX:-asterisk -rx} "pjsip send register itsp-b" >/dev/null 2>&1 || true
