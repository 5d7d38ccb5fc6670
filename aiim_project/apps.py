from django.apps import AppConfig


class AiimProjectConfig(AppConfig):
    name = "aiim_project"
    verbose_name = "AIIM"
