from services.template.server import main

main()
