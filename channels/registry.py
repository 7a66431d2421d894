"""The channel registry: config key → how to build that channel, in start order.

A literal table, not a directory scan: a new channel is one line here and one options class in
the config. Each factory imports its module only when called, so a disabled channel's library
(aiosmtpd, pyftpdlib, watchdog, uvicorn, paramiko) is never loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from channels.base import Channel, ChannelContext

if TYPE_CHECKING:
    from channels.pull import PullChannel

ChannelFactory = Callable[[ChannelContext], Channel]


def _ftp(ctx: ChannelContext) -> Channel:
    from channels.ftp import FtpChannel

    opts = ctx.settings.channels.ftp
    if opts is None:
        return FtpChannel(ctx)
    return FtpChannel(
        ctx, login_delay=opts.failed_login_delay, close_grace=opts.close_grace, workers=opts.workers
    )


def _smtp(ctx: ChannelContext) -> Channel:
    from channels.smtp import SmtpChannel

    return SmtpChannel(ctx)


def _http(ctx: ChannelContext) -> Channel:
    from channels.http_api import HttpApiChannel

    return HttpApiChannel(ctx)


def _dropdir(ctx: ChannelContext) -> Channel:
    from channels.dropdir import DropdirChannel

    return DropdirChannel(ctx)


def pull_channel(ctx: ChannelContext) -> PullChannel:
    """The scheduled pull channel, remembering fetched files in the database."""
    from channels.pull import PullChannel
    from ingest.pulled import PullLedger

    return PullChannel(ctx, PullLedger(ctx.spool.store))


CHANNELS: Mapping[str, ChannelFactory] = MappingProxyType(
    {
        "dropdir": _dropdir,
        "pull": pull_channel,
        "http": _http,
        "smtp": _smtp,
        "ftp": _ftp,
    }
)
