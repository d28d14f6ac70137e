from django.apps import AppConfig


class BridgeConfig(AppConfig):
    name = "bridge"

    def ready(self) -> None:
        # The broker's live credentials follow the registry (docs/mqtt.md): devices does not know the bridge.
        from bridge.dynsec import broker_credentials_changed
        from devices.signals import credentials_changed

        credentials_changed.connect(broker_credentials_changed, dispatch_uid="mqtt-dynsec")
