#!/usr/bin/python3
"""What libtorrent (python3-libtorrent, Debian) makes of a torrent, and
torrents made by libtorrent, for murder's interop tests.

  lt_tool.py info TORRENT            -> JSON: info_hash (v1), total_size, files
  lt_tool.py create PATH OUT v1|hybrid [PIECE_LENGTH] [ANNOUNCE_URL]
  lt_tool.py seed TORRENT SAVE_PATH PORT   -> seeds until killed
  lt_tool.py download TORRENT SAVE_PATH PORT [TIMEOUT] -> exits 0 once complete
  lt_tool.py seed-default TORRENT SAVE_PATH PORT RATE
      seeds with libtorrent's default choking (8 unchoke slots, rotated),
      uploading at most RATE bytes/s, rotating its slots every second, a peer out after one piece
  lt_tool.py download-default TORRENT SAVE_PATH PORT [TIMEOUT]
      downloads with libtorrent's default settings
"""
import json
import os
import sys
import time

import libtorrent as lt


def info(path):
    ti = lt.torrent_info(path)
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        parts = fs.file_path(i).split(os.sep)
        if ti.num_files() > 1 or len(parts) > 1:
            parts = parts[1:]  # libtorrent puts the torrent's name first
        files.append({"path": parts, "length": fs.file_size(i)})
    print(json.dumps({
        "info_hash": str(ti.info_hashes().v1),
        "total_size": ti.total_size(),
        "name": ti.name(),
        "num_pieces": ti.num_pieces(),
        "piece_length": ti.piece_length(),
        "files": files,
    }))


def create(path, out, kind, piece_length=0, announce="http://127.0.0.1:8998/announce"):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    flags = lt.create_torrent.v1_only if kind == "v1" else 0
    ct = lt.create_torrent(fs, int(piece_length), flags=flags)
    ct.add_tracker(announce)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(path)))
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def base_settings(port):
    """What every test session needs: TCP only (uTP over loopback is very
    slow), peers from the tracker alone (no DHT, LSD, UPnP or NAT-PMP),
    several peers on one address (they all are 127.0.0.1)."""
    return {
        "listen_interfaces": "127.0.0.1:%d" % int(port),
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    }


def session(port):
    """libtorrent tuned for a LAN: its high_performance_seed settings and
    unlimited unchoke slots."""
    settings = lt.high_performance_seed()
    settings.update(base_settings(port))
    settings["unchoke_slots_limit"] = -1
    return lt.session(settings)


def default_session(port, extra=None):
    """libtorrent's defaults (8 unchoke slots, rotated) for the rest."""
    settings = base_settings(port)
    settings.update(extra or {})
    return lt.session(settings)


def seed_default(torrent, save_path, port, rate):
    ses = default_session(port, {"upload_rate_limit": int(rate), "unchoke_interval": 1, "seeding_piece_quota": 1})
    # libtorrent lets peers on local networks (loopback among them) skip
    # its unchoke slots; a test of its choking on loopback undoes that.
    local = ses.get_peer_class(lt.session.local_peer_class_id)
    local["ignore_unchoke_slots"] = False
    ses.set_peer_class(lt.session.local_peer_class_id, local)
    seed_with(ses, torrent, save_path)


def download_default(torrent, save_path, port, timeout=120):
    download_with(default_session(port), torrent, save_path, timeout)


def seed(torrent, save_path, port):
    seed_with(session(port), torrent, save_path)


def seed_with(ses, torrent, save_path):
    handle = ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save_path})
    while True:
        status = handle.status()
        print("%s %.1f%% peers=%d" % (status.state, status.progress * 100, status.num_peers), flush=True)
        time.sleep(1)


def download(torrent, save_path, port, timeout=120):
    download_with(session(port), torrent, save_path, timeout)


def download_with(ses, torrent, save_path, timeout):
    handle = ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save_path})
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        status = handle.status()
        if status.is_seeding:
            print("complete", flush=True)
            return
        print("%s %.1f%% peers=%d" % (status.state, status.progress * 100, status.num_peers), flush=True)
        time.sleep(0.2)
    sys.exit("timed out")


def probe(torrent, save_path, port, peer, seconds):
    """An outsider: connects to PEER (IP:PORT) directly, as long as it
    lets it, for SECONDS; prints the payload bytes it got."""
    ses = default_session(port)
    handle = ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save_path})
    ip, peer_port = peer.rsplit(":", 1)
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        handle.connect_peer((ip, int(peer_port)))
        time.sleep(0.5)
    status = handle.status()
    print("downloaded %d progress %.3f" % (status.total_payload_download, status.progress), flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"info": info, "create": create, "seed": seed, "download": download,
     "seed-default": seed_default, "download-default": download_default, "probe": probe}[cmd](*args)
