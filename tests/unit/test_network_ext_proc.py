"""The network ext_proc messages answering each request, in the order Envoy 1.40 needs them
(what each shape does in Envoy: tests/integration/test_tcp_answers.py)."""

from __future__ import annotations

from sidecar.network_ext_proc import tcp_responses
from sidecar.protos import network_ext_proc as pb
from tests.unit.test_sessions import fake, tcp
from vmm.events import FORWARD, Answer, AnswerAndClose, Close, Event, TcpData, TcpOpen, Verdict

R = pb.ProcessingResponse


def read(data: bytes, end_of_stream: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(read_data=pb.Data(data=data, end_of_stream=end_of_stream))


def write(data: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(write_data=pb.Data(data=data))


def answering(event: Event) -> Verdict:
    if not isinstance(event, TcpData):
        return FORWARD
    verdicts: dict[bytes, Verdict] = {b"ask": Answer(b"answer"), b"quit": AnswerAndClose(b"bye"),
                                      b"stop": Close()}
    return verdicts.get(event.data, FORWARD)


def test_passed_bytes_are_one_response_in_their_own_direction() -> None:
    session = tcp(fake("p", answering))
    assert tcp_responses(session, read(b"hi", True)) == (
        R(read_data=pb.Data(data=b"hi", end_of_stream=True), data_processing_status=R.UNMODIFIED),)
    assert tcp_responses(session, write(b"yo")) == (
        R(write_data=pb.Data(data=b"yo"), data_processing_status=R.UNMODIFIED),)


def test_an_answer_to_read_data_is_write_data_then_the_empty_read_data() -> None:
    session = tcp(fake("p", answering))
    assert tcp_responses(session, read(b"ask")) == (
        R(write_data=pb.Data(data=b"answer"), data_processing_status=R.MODIFIED),
        R(read_data=pb.Data(), data_processing_status=R.MODIFIED))
    assert tcp_responses(session, read(b"quit", True)) == (
        R(write_data=pb.Data(data=b"bye"), data_processing_status=R.MODIFIED),
        R(read_data=pb.Data(end_of_stream=True), data_processing_status=R.MODIFIED,
          connection_status=R.CLOSE))


def test_an_answer_to_write_data_replaces_it_and_a_close_comes_after() -> None:
    session = tcp(fake("p", answering))
    assert tcp_responses(session, write(b"ask")) == (
        R(write_data=pb.Data(data=b"answer"), data_processing_status=R.MODIFIED),)
    assert tcp_responses(session, write(b"quit")) == (
        R(write_data=pb.Data(data=b"bye"), data_processing_status=R.MODIFIED),
        R(connection_status=R.CLOSE))
    closed = tcp(fake("p", answering))
    assert tcp_responses(closed, write(b"stop")) == (
        R(write_data=pb.Data(), data_processing_status=R.MODIFIED, connection_status=R.CLOSE),)


def test_a_greeting_goes_before_the_first_bytes_either_way() -> None:
    def greeter(event: Event) -> Verdict:
        return Answer(b"hello ") if isinstance(event, TcpOpen) else FORWARD

    client_first = tcp(fake("g", greeter))
    assert tcp_responses(client_first, read(b"x")) == (
        R(write_data=pb.Data(data=b"hello "), data_processing_status=R.MODIFIED),
        R(read_data=pb.Data(data=b"x"), data_processing_status=R.UNMODIFIED))
    server_first = tcp(fake("g", greeter))
    assert tcp_responses(server_first, write(b"+OK")) == (
        R(write_data=pb.Data(data=b"hello +OK"), data_processing_status=R.MODIFIED),)
