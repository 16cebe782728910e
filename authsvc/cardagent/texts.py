"""What the agent's PIN page says, in English and French (chosen from ``Accept-Language``)."""

from __future__ import annotations

LANGUAGES = ("en", "fr")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "agent": "Card agent",
        "title": "Sign in with your smartcard",
        "asks": "This site asks you to sign in with your smartcard:",
        "card": "Card",
        "choose_card": "Choose the card",
        "holder": "Card holder:",
        "pin": "PIN of the card",
        "pin_pad": "After clicking Sign, type the PIN on the card reader's keypad.",
        "sign": "Sign",
        "cancel": "Cancel",
        "try_again": "Try again",
        "pin_stays_here": (
            "Your PIN stays on this computer: it goes to your card only, never to the website."
        ),
        "wrong_pin": ("Wrong PIN. Try again — the card blocks itself after too many wrong PINs."),
        "final_try": "Careful: one more wrong PIN will block the card.",
        "pin_empty": "Type the card's PIN.",
        "pin_blocked": (
            "The card's PIN is blocked after too many wrong PINs. Unblock it with the card's "
            "PUK code in LuxTrust's software, or contact LuxTrust. You can close this window."
        ),
        "locked_card": "PIN blocked",
        "no_card": "No card found. Insert your card in the reader, then click Try again.",
        "card_removed": "The card is no longer in the reader. Insert it and try again.",
        "card_error": "The card could not sign. Take it out, insert it again and try again.",
        "done": "Done, you can close this window.",
        "cancelled": "Cancelled. You can close this window.",
        "expired": (
            "This request has expired. Start again from the website; you can close this window."
        ),
        "over": "This request does not exist or is over. You can close this window.",
        "bad_form": "This form was not sent from this page, or is too old. Try again.",
    },
    "fr": {
        "agent": "Agent de carte",
        "title": "Identification avec votre carte à puce",
        "asks": "Ce site vous demande de vous identifier avec votre carte à puce :",
        "card": "Carte",
        "choose_card": "Choisissez la carte",
        "holder": "Titulaire :",
        "pin": "Code PIN de la carte",
        "pin_pad": "Après avoir cliqué sur Signer, tapez le code PIN sur le clavier du lecteur.",
        "sign": "Signer",
        "cancel": "Annuler",
        "try_again": "Réessayer",
        "pin_stays_here": (
            "Votre code PIN reste sur cet ordinateur : il ne va qu'à votre carte, "
            "jamais au site web."
        ),
        "wrong_pin": (
            "Code PIN erroné. Réessayez — la carte se bloque après trop de codes PIN erronés."
        ),
        "final_try": "Attention : un autre code PIN erroné bloquera la carte.",
        "pin_empty": "Tapez le code PIN de la carte.",
        "pin_blocked": (
            "Le code PIN de la carte est bloqué après trop de codes erronés. Débloquez-le avec "
            "le code PUK de la carte dans le logiciel de LuxTrust, ou contactez LuxTrust. "
            "Vous pouvez fermer cette fenêtre."
        ),
        "locked_card": "PIN bloqué",
        "no_card": (
            "Aucune carte trouvée. Insérez votre carte dans le lecteur, puis cliquez sur Réessayer."
        ),
        "card_removed": "La carte n'est plus dans le lecteur. Insérez-la et réessayez.",
        "card_error": "La carte n'a pas pu signer. Retirez-la, insérez-la de nouveau et réessayez.",
        "done": "C'est fait, vous pouvez fermer cette fenêtre.",
        "cancelled": "Annulé. Vous pouvez fermer cette fenêtre.",
        "expired": (
            "Cette demande a expiré. Recommencez depuis le site web ; vous pouvez fermer cette "
            "fenêtre."
        ),
        "over": "Cette demande n'existe pas ou est terminée. Vous pouvez fermer cette fenêtre.",
        "bad_form": (
            "Ce formulaire n'a pas été envoyé depuis cette page, ou est trop ancien. Réessayez."
        ),
    },
}
