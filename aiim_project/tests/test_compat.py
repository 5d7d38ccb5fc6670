"""Each private attribute aiim_project/compat relies on still exists in the pinned libraries.

An upgrade that renames one fails here, by name, before the behaviour tests listed in
docs/internals.md fail in less obvious ways."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from asgiref.sync import sync_to_async

from aiim_project.compat import asgiref as compat_asgiref


def test_asgiref_tells_a_worker_thread_its_servers_loop():
    async def main():
        return asyncio.get_running_loop(), await sync_to_async(compat_asgiref.server_loop)()

    loop, seen = asyncio.run(main())
    assert seen is loop
    assert compat_asgiref.server_loop() is None  # outside a server's thread


def test_autobahn_protocol_has_the_send_state_the_direct_write_reads():
    from autobahn.websocket import protocol

    for name in ("SEND_STATE_GROUND", "STATE_OPEN", "sendMessage"):
        assert hasattr(protocol.WebSocketProtocol, name), name
    source = inspect.getsource(protocol.WebSocketProtocol)
    for name in ("self.send_queue", "self.send_state", "self._perMessageCompress", "self.state"):
        assert name in source, name


def test_autobahn_formats_its_connection_debug_lines_with_the_pformat_we_make_lazy():
    from autobahn.websocket import protocol

    from aiim_project.compat import autobahn

    source = inspect.getsource(protocol.WebSocketProtocol._connectionMade)
    assert "pformat(configAttrLog)" in source
    autobahn.lazy_debug_formatting()
    assert str(protocol.pformat([("a", 1)])) == "[('a', 1)]"


def test_twisted_transport_has_the_buffer_fields_the_gateway_reads():
    from twisted.internet.abstract import FileDescriptor

    source = inspect.getsource(FileDescriptor)
    for name in ("dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen", "_writeDisconnected", "writeSomeData"):
        assert name in source, name


def test_daphne_builds_requests_from_the_class_we_replace_and_queues_frames_where_we_look():
    from daphne import http_protocol, ws_protocol

    assert "WebRequest" in inspect.getsource(http_protocol.HTTPFactory.buildProtocol)
    assert "application_queue" in inspect.getsource(ws_protocol)
    assert "_parsePOSTFormSubmission" in inspect.getsource(__import__("twisted.web.http", fromlist=["Request"]).Request.__init__)


def test_daphne_access_log_is_a_callable_class_we_wrap():
    from daphne import access

    assert callable(access.AccessLogGenerator.__call__)
    assert "details" in inspect.signature(access.AccessLogGenerator.__call__).parameters


def test_django_csrf_middleware_rejects_through_the_method_we_override():
    from django.middleware.csrf import CsrfViewMiddleware

    assert "self._reject(" in inspect.getsource(CsrfViewMiddleware)


def test_channels_redis_pubsub_layer_has_the_receive_loop_we_replace():
    from channels_redis import pubsub

    shard = pubsub.RedisSingleShardConnection
    for name in ("_do_receiving", "_receive_message"):
        assert hasattr(shard, name), name
    source = inspect.getsource(pubsub)
    for name in ("_receive_task", "_pubsub", "_shards", "self.channels", "def _get_layer"):
        assert name in source, name
    # receive_many takes what receive would: the channel's queue, deserialized the same way.
    receive = inspect.getsource(pubsub.RedisPubSubLoopLayer.receive)
    for name in ("q = self.channels[channel]", "await q.get()", "self.channel_layer.deserialize(message)"):
        assert name in receive, name


def test_channels_redis_pubsub_layer_has_what_group_send_many_uses():
    """compat.channels_redis.group_send_many publishes as the loop layer's group_send does."""
    from channels_redis import pubsub

    for name in ("_get_group_channel_name", "_get_shard", "group_send"):
        assert hasattr(pubsub.RedisPubSubLoopLayer, name), name
    assert hasattr(pubsub.RedisSingleShardConnection, "_ensure_redis")
    source = inspect.getsource(pubsub.RedisPubSubLoopLayer.group_send)
    for name in ("self._get_group_channel_name(group)", "self._get_shard(group_channel)", "self.channel_layer.serialize(message)"):
        assert name in source, name
    assert "self._redis.publish(channel, message)" in inspect.getsource(pubsub.RedisSingleShardConnection.publish)


def test_channels_redis_pubsub_layer_has_what_group_add_many_uses():
    """compat.channels_redis.group_add_many / group_discard_many keep the layer's own books
    (`groups`, each shard's `_subscribed_to`) as its group_add / group_discard do."""
    from channels_redis import pubsub

    for name in ("_get_group_channel_name", "_get_shard", "group_add", "group_discard"):
        assert hasattr(pubsub.RedisPubSubLoopLayer, name), name
    add = inspect.getsource(pubsub.RedisPubSubLoopLayer.group_add)
    for name in ("self.groups[group_channel]", "shard.subscribe(group_channel)"):
        assert name in add, name
    discard = inspect.getsource(pubsub.RedisPubSubLoopLayer.group_discard)
    for name in ("del self.groups[group_channel]", "shard.unsubscribe(group_channel)"):
        assert name in discard, name
    subscribe = inspect.getsource(pubsub.RedisSingleShardConnection.subscribe)
    for name in ("async with self._lock", "self._subscribed_to", "self._ensure_receiver()", "await self._pubsub.subscribe(channel)"):
        assert name in subscribe, name
    unsubscribe = inspect.getsource(pubsub.RedisSingleShardConnection.unsubscribe)
    assert "await self._pubsub.unsubscribe(channel)" in unsubscribe and "self._subscribed_to.remove(channel)" in unsubscribe


def test_redis_py_connection_has_what_read_buffered_uses():
    """compat.redis_py.read_buffered parses buffered pub/sub replies as PubSub.parse_response does."""
    from redis._parsers import _AsyncHiredisParser
    from redis.asyncio import client, connection

    conn = connection.Connection()
    assert isinstance(conn._parser, _AsyncHiredisParser)  # hiredis installed: the C parser is the default
    assert hasattr(_AsyncHiredisParser, "can_read")
    assert "push_request" in inspect.signature(connection.Connection._read_response_from_parser).parameters
    assert "nowait" in inspect.signature(connection.Connection.disconnect).parameters
    assert "conn.read_response" in inspect.getsource(client.PubSub.parse_response)
    assert "push_request=True" in inspect.getsource(client.PubSub.parse_response)


def test_channels_in_memory_layer_keeps_a_queue_per_channel():
    from channels.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer()
    assert isinstance(layer.channels, dict)


def test_django_handler_has_what_the_one_hop_handler_overrides_and_calls():
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.base import BaseHandler

    for name in ("create_request", "read_body", "send_response", "chunk_size", "handle"):
        assert hasattr(ASGIHandler, name), name
    source = inspect.getsource(BaseHandler.load_middleware)
    for name in ("_view_middleware", "_template_response_middleware", "_exception_middleware", "_middleware_chain"):
        assert name in source, name


def test_django_model_init_is_what_instances_from_rows_skips():
    """`instances_from_rows` sets what `Model.__init__` and `from_db` set for positional
    values of every concrete field: the attnames, a ModelState, adding and db."""
    from django.db.models import Model

    init, from_db = inspect.getsource(Model.__init__), inspect.getsource(Model.from_db)
    assert "self._state = ModelState()" in init
    assert "_setattr(self, field.attname, val)" in init
    assert "new._state.adding = False" in from_db and "new._state.db = db" in from_db


@pytest.mark.django_db
@pytest.mark.parametrize("model_name", ["Message", "Member"])
def test_instances_from_rows_equal_the_orm_s(model_name, make_conversation, send):
    from django.db import connection
    from django.db.models.signals import post_init

    from aiim_project.compat.django import instances_from_rows
    from messaging import models

    model = getattr(models, model_name)
    conversation = make_conversation()
    send(conversation, content={"text": "hi", "n": 1}, metadata={"k": [1, 2]})
    orm = list(model.objects.filter(conversation_id=conversation.id).order_by("pk"))
    rows = [[getattr(o, f.attname) for f in model._meta.concrete_fields] for o in orm]
    fast = instances_from_rows(model, rows, connection.alias)
    assert [o.__dict__.keys() - {"_state"} for o in fast] == [o.__dict__.keys() - {"_state"} for o in orm]
    for a, b in zip(fast, orm, strict=True):
        assert type(a) is model and a == b
        assert [getattr(a, f.attname) for f in model._meta.concrete_fields] == [getattr(b, f.attname) for f in model._meta.concrete_fields]
        assert (a._state.adding, a._state.db) == (False, connection.alias)
    # Saved as an update of its row, not an insert.
    fast[0].save()
    assert model.objects.filter(conversation_id=conversation.id).count() == len(orm)
    # A receiver of post_init for the model gets its call: the ORM's own path then.
    calls = []

    def receiver(sender, instance, **kw):
        calls.append(instance)

    post_init.connect(receiver, sender=model)
    try:
        again = instances_from_rows(model, rows, connection.alias)
    finally:
        post_init.disconnect(receiver, sender=model)
    assert calls == again


@pytest.mark.django_db
def test_psycopg_pool_keeps_its_check_where_the_backend_sets_it():
    from psycopg_pool import ConnectionPool

    assert "self._check" in inspect.getsource(ConnectionPool)


def test_a_reply_to_an_older_subscribe_never_confirms_a_newer_one():
    """compat.channels_redis tracks Redis's replies to the SUBSCRIBE / UNSUBSCRIBE it sends:
    a channel subscribed, dropped and subscribed again is confirmed only by the last reply."""
    from aiim_project.compat.channels_redis import _Confirmations

    c = _Confirmations()
    c.sent(["g"])
    assert "g" not in c.confirmed
    c.replied("subscribe", "g")
    assert "g" in c.confirmed
    c.sent(["g"])  # UNSUBSCRIBE
    c.sent(["g"])  # SUBSCRIBE again
    assert "g" not in c.confirmed
    c.replied("unsubscribe", "g")
    assert "g" not in c.confirmed
    c.replied("subscribe", "g")
    assert "g" in c.confirmed
    c.sent(["g"])
    c.replied("unsubscribe", "g")
    assert "g" not in c.confirmed
    # After a lost connection the client subscribes again on its own: its replies confirm.
    c.sent(["h"])
    c.lost()
    assert not c.confirmed and not c.outstanding
    c.replied("subscribe", "h")
    assert "h" in c.confirmed
