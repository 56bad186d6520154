"""Short plain-language notes on why each visit matters, shown only after the
patient has confirmed who they are. Written for a grade-8 reading level or
below in each language (tests/services/test_education.py measures it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Note:
    why: str
    visit: str
    length: str
    cost: str


NOTES: dict[str, dict[str, Note]] = {
    "annual_wellness": {
        "en": Note("A yearly check-up helps you stay well. We can find small problems early, when they are easy to treat.",
                   "We talk about how you feel, check your weight and blood pressure, and update your shots.",
                   "It takes about 30 minutes.",
                   "Most insurance plans pay for one wellness visit each year. Ask us if you are not sure."),
        "es": Note("Un chequeo cada año le ayuda a estar bien. Podemos ver problemas pequeños a tiempo, cuando son fáciles de tratar.",
                   "Hablamos de cómo se siente, revisamos su peso y su presión, y ponemos sus vacunas al día.",
                   "Dura unos 30 minutos.",
                   "Casi todos los seguros pagan una visita de bienestar al año. Pregúntenos si tiene dudas."),
    },
    "breast_screening": {
        "en": Note("This test can find changes early, often before you can feel them. Early care works best.",
                   "A trained staff member takes pictures. It can feel tight for a few seconds.",
                   "Plan for about 30 minutes.",
                   "Most plans pay for it every one or two years. We can help if you have questions about cost."),
        "es": Note("Esta prueba puede ver cambios a tiempo, muchas veces antes de que usted los sienta. La atención a tiempo funciona mejor.",
                   "Una persona del equipo toma imágenes. Puede apretar unos segundos.",
                   "Calcule unos 30 minutos.",
                   "Casi todos los seguros la pagan cada uno o dos años. Le ayudamos si tiene preguntas sobre el costo."),
    },
    "colorectal_screening": {
        "en": Note("This check can find problems early, when they are easier to treat. Some tests can even stop a problem before it starts.",
                   "We talk about which test fits you. Some tests you can do at home.",
                   "The talk takes about 20 minutes.",
                   "Most plans pay for it. Ask us about the cost before you choose a test."),
        "es": Note("Esta revisión puede ver problemas a tiempo, cuando son más fáciles de tratar. Algunas pruebas pueden evitar un problema antes de que empiece.",
                   "Hablamos de qué prueba es mejor para usted. Algunas se hacen en casa.",
                   "La charla dura unos 20 minutos.",
                   "Casi todos los seguros la pagan. Pregúntenos el costo antes de elegir una prueba."),
    },
    "diabetes_a1c": {
        "en": Note("A simple blood test shows how your care plan is working. It helps you and your doctor make good choices.",
                   "We take a small amount of blood from your arm. You do not need to fast.",
                   "It takes about 15 minutes.",
                   "Most plans pay for this test. Ask us if you have questions."),
        "es": Note("Una prueba de sangre sencilla muestra cómo funciona su plan de cuidado. Le ayuda a usted y a su médico a decidir bien.",
                   "Sacamos un poco de sangre del brazo. No necesita estar en ayunas.",
                   "Dura unos 15 minutos.",
                   "Casi todos los seguros pagan esta prueba. Pregúntenos si tiene dudas."),
    },
    "refill_gap": {
        "en": Note("Taking your medicine every day keeps it working. Running out, even for a short time, can make you feel worse.",
                   "You can ask for a refill here, or talk to our pharmacist about any worries.",
                   "A talk with the pharmacist takes about 15 minutes.",
                   "If the price is a problem, tell us. There may be a lower-cost choice."),
        "es": Note("Tomar su medicina cada día hace que siga funcionando. Quedarse sin ella, aunque sea poco tiempo, puede hacerle sentir peor.",
                   "Puede pedir más medicina aquí o hablar con nuestro farmacéutico si tiene dudas.",
                   "Hablar con el farmacéutico dura unos 15 minutos.",
                   "Si el precio es un problema, díganos. Puede haber una opción más barata."),
    },
    "referral_open": {
        "en": Note("Your doctor asked for this visit to look more closely at your health. Going helps you get the right care.",
                   "You meet the care team, talk about your health, and make a plan together.",
                   "Plan for about 45 minutes.",
                   "Ask us if your plan needs an approval first. We can help with that."),
        "es": Note("Su médico pidió esta visita para revisar mejor su salud. Ir le ayuda a recibir la atención correcta.",
                   "Conoce al equipo, habla de su salud y juntos hacen un plan.",
                   "Calcule unos 45 minutos.",
                   "Pregúntenos si su seguro necesita un permiso antes. Le podemos ayudar."),
    },
    "post_discharge_followup": {
        "en": Note("A visit soon after a hospital stay helps you heal well. It also helps you avoid going back.",
                   "We check how you feel, go over your medicines, and answer your questions.",
                   "It takes about 30 minutes. A video visit is fine too.",
                   "Most plans pay for this visit. Call us if cost is a worry."),
        "es": Note("Una visita poco después de salir del hospital le ayuda a sanar bien. También le ayuda a no tener que volver.",
                   "Vemos cómo se siente, revisamos sus medicinas y contestamos sus preguntas.",
                   "Dura unos 30 minutos. También puede ser por video.",
                   "Casi todos los seguros pagan esta visita. Llámenos si el costo le preocupa."),
    },
    "flu_vaccine": {
        "en": Note("The flu shot lowers your chance of getting very sick this winter. It also helps protect the people around you.",
                   "A nurse gives you the shot in the arm. You wait a few minutes after.",
                   "It takes about 15 minutes.",
                   "Most plans pay for the flu shot. Ask us if you are not sure."),
        "es": Note("La vacuna contra la gripe baja la posibilidad de enfermarse mucho este invierno. También protege a las personas cerca de usted.",
                   "Una enfermera le pone la vacuna en el brazo. Espera unos minutos después.",
                   "Dura unos 15 minutos.",
                   "Casi todos los seguros pagan la vacuna. Pregúntenos si no está seguro."),
    },
}


def education_note(care_gap_code: str, locale: str) -> Note | None:
    notes = NOTES.get(care_gap_code)
    return (notes.get(locale) or notes.get("en")) if notes else None
