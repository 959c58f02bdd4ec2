"""Coverage-guided fuzzing (atheris/libFuzzer) of the NTS parsers: KE records and NTP
extension fields.

Not part of the test run (pytest does not collect ``fuzz_*.py``). Run it by hand:

    pip install -e '.[fuzz]'
    python tests/fuzz/fuzz_nts.py -max_total_time=60 [corpus_dir]

One input goes through the KE message parser and both judges (client response,
server request), the server's NTS judgement of an NTP request (with a keyset whose
cookie the fuzzer can find by comparison tracing), the client's reply verifier and
the NAK check. Any exception but KeRecordError from the KE parser or PacketError
from the extension-field parsers is a crash; tests/fuzz/test_fuzz_nts.py covers the
same contract in the default run.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from ntpd_py.core.errors import PacketError
    from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
    from ntpd_py.core.nts_extensions import AesSivCmac256, is_nts_nak, open_server_reply
    from ntpd_py.core.nts_ke_records import (
        KeRecordError,
        parse_client_response,
        parse_message,
        parse_server_request,
    )
    from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request, nak_reply

# The C engine (workers/_nts_fast.c) is not instrumented by atheris (no coverage
# feedback from C), but every input runs through it and must give the reference verdict.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo
from tests.workers.test_nts_fast import check_same

KEYSET = ServerKeySet.generate(lambda n: bytes(n), 0)
KEYS = NtsKeys(bytes(32), bytes(range(32)))
S2C = AesSivCmac256(KEYS.s2c)
UID = bytes(range(32))


def one_input(data: bytes) -> None:
    with contextlib.suppress(KeRecordError):
        records = parse_message(data)
        if records is not None:
            parse_client_response(records)
            parse_server_request(records)
    verdict = judge_request(data, KEYSET)
    if verdict.verdict is Verdict.NAK:
        assert len(nak_reply(verdict)) <= len(data)
    elif verdict.verdict is Verdict.AUTHENTICATED:
        assert len(authenticated_reply(data[:48], verdict, KEYSET, bytes, len(data))) <= len(data)
    with contextlib.suppress(PacketError):
        open_server_reply(data, UID, S2C)
    is_nts_nak(data, UID)
    if 48 < len(data) <= 1152:
        check_same([data], KEYSET)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
