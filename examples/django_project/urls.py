"""Routes of the example project. Django's route templates have no leading slash: the span's
``http.route`` is ``items/<int:item_id>``."""

from django.urls import path

from django_project import views

urlpatterns = [
    path("health", views.health),
    path("fast", views.fast),
    path("cpu", views.cpu_report),
    path("sync-io", views.sync_io),
    path("async-io", views.async_io),
    path("items/<int:item_id>", views.item),
    path("signup", views.signup),
]
