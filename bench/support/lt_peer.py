#!/usr/bin/python3
"""A python3-libtorrent peer for bench/swarm, tuned for a LAN swarm as the
issue asks: high_performance_seed settings, unlimited unchoke slots, TCP
only, no DHT, LSD, UPnP or NAT-PMP. Listens on every address of its host.

  lt_peer.py seed TORRENT SAVE_PATH PORT       seeds until killed
  lt_peer.py download TORRENT SAVE_PATH PORT   prints "complete" once the
                                               data is verified, then seeds
                                               until killed
"""
import sys
import time

import libtorrent as lt


def session(port):
    settings = lt.high_performance_seed()
    settings.update({
        "listen_interfaces": "0.0.0.0:%d" % int(port),
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "unchoke_slots_limit": -1,
        "alert_mask": lt.alert.category_t.status_notification,
    })
    return lt.session(settings)


def main(cmd, torrent, save_path, port):
    ses = session(port)
    handle = ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save_path})
    announced = False
    while True:
        ses.wait_for_alert(20)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.torrent_finished_alert) and cmd == "download" and not announced:
                print("complete", flush=True)
                announced = True
        if cmd == "seed" and not announced and handle.status().is_seeding:
            print("seeding", flush=True)
            announced = True
        if cmd == "download" and not announced and handle.status().is_seeding:
            print("complete", flush=True)
            announced = True
        time.sleep(0.005)


if __name__ == "__main__":
    main(*sys.argv[1:5])
